package boot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// Remote artifact sources are URLs an operator typed, but Kiln fetches them and
// serves the bytes to anyone at /artifacts/NAME: without a check, an Artifact whose
// source is http://169.254.169.254/... or http://127.0.0.1:.../ would make Kiln a
// proxy into its own network (SSRF). SourcePolicy decides which addresses Kiln may
// connect to for a source. It is checked on the address actually dialed (after DNS
// resolution, in the dialer's Control hook), so a name that resolves to an
// internal address, or changes its answer between a check and the connection (DNS
// rebinding), cannot get past it.

// ErrSourceNotAllowed: a remote source's address is outside the allow-list.
var ErrSourceNotAllowed = errors.New("source address not allowed (see --artifact-allow)")

// PublicSources is the allow-list entry for every address outside the internal
// ranges; an empty allow-list means just this entry.
const PublicSources = "public"

// internalPrefixes are refused unless an allow-list entry names them: loopback,
// unspecified, link-local (and with it the cloud metadata address
// 169.254.169.254), multicast, broadcast, private (RFC 1918), shared address space
// (CGNAT, RFC 6598), unique local (RFC 4193) including AWS's metadata address
// fd00:ec2::254, and reserved ranges.
var internalPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// metadataAddrs are the cloud instance metadata services: allowed only by a
// prefix entry that contains them, never by a host name or "public".
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),
	netip.MustParseAddr("fd00:ec2::254"),
}

// SourcePolicy is the allow-list of remote artifact sources: prefixes (an address
// is a /32 or /128), host names (exact, or "*.example.com" for its subdomains) and
// "public". Its zero value allows public addresses only.
type SourcePolicy struct {
	public   bool
	prefixes []netip.Prefix
	hosts    []string
}

// ParseSourcePolicy reads allow-list entries: "public", an address, a CIDR
// prefix, or a host name. No entries: "public".
func ParseSourcePolicy(entries []string) (SourcePolicy, error) {
	var p SourcePolicy
	if len(entries) == 0 {
		p.public = true
	}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
		case strings.EqualFold(e, PublicSources):
			p.public = true
		case strings.Contains(e, "/"):
			pfx, err := netip.ParsePrefix(e)
			if err != nil {
				return SourcePolicy{}, fmt.Errorf("artifact source allow-list entry %q: %w", e, err)
			}
			p.prefixes = append(p.prefixes, pfx.Masked())
		default:
			if a, err := netip.ParseAddr(e); err == nil {
				p.prefixes = append(p.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			host := strings.ToLower(strings.TrimSuffix(e, "."))
			if strings.ContainsAny(host, ":@ ") {
				return SourcePolicy{}, fmt.Errorf("artifact source allow-list entry %q: not public, an address, a prefix or a host name", e)
			}
			p.hosts = append(p.hosts, host)
		}
	}
	return p, nil
}

// hostListed reports whether a URL host is named by a host entry.
func (p SourcePolicy) hostListed(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range p.hosts {
		if h == host || strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:]) {
			return true
		}
	}
	return false
}

// CheckAddr says whether Kiln may connect to addr for a source whose URL names
// host.
func (p SourcePolicy) CheckAddr(host string, addr netip.Addr) error {
	addr = addr.Unmap()
	for _, pfx := range p.prefixes {
		if pfx.Contains(addr) {
			return nil
		}
	}
	for _, m := range metadataAddrs {
		if addr == m {
			return fmt.Errorf("%w: %s is a cloud metadata address", ErrSourceNotAllowed, addr)
		}
	}
	if p.hostListed(host) {
		return nil
	}
	internal := false
	for _, pfx := range internalPrefixes {
		if pfx.Contains(addr) {
			internal = true
			break
		}
	}
	// The zero SourcePolicy (no entries at all) is "public".
	public := p.public || len(p.prefixes) == 0 && len(p.hosts) == 0
	if !internal && public {
		return nil
	}
	if internal {
		return fmt.Errorf("%w: %s (host %s) is an internal address", ErrSourceNotAllowed, addr, host)
	}
	return fmt.Errorf("%w: %s (host %s) is not in the allow-list", ErrSourceNotAllowed, addr, host)
}

// checkProxied checks a source's host before a request that goes through a
// proxy (HTTP_PROXY and friends): the dialer then only sees the proxy, which must
// be allowed itself. The proxy resolves the name again, so for sources fetched
// through a proxy the check is on the URL, not the connection.
func (p SourcePolicy) checkProxied(ctx context.Context, req *http.Request) error {
	proxy, err := http.ProxyFromEnvironment(req)
	if err != nil || proxy == nil {
		return err
	}
	host := req.URL.Hostname()
	addrs := []netip.Addr{}
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = append(addrs, a)
	} else if addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
		return fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, a := range addrs {
		if err := p.CheckAddr(host, a); err != nil {
			return err
		}
	}
	return nil
}

// DirectClient is an HTTP client whose every connection's address passes the
// policy, without a proxy (the dialed address is then the destination's) and
// without following redirects (a 3xx is the answer): for Kiln's own outgoing
// calls to operator-given URLs (webhooks).
func (p SourcePolicy) DirectClient(timeout time.Duration) *http.Client {
	c := p.client()
	tr := c.Transport.(*http.Transport)
	tr.Proxy = nil
	tr.ResponseHeaderTimeout = timeout
	c.Timeout = timeout
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// client is the HTTP client remote sources are fetched with: every connection's
// address passes the policy (Control runs on the resolved address, just before
// connect), and a redirect to another host or from https to http is refused.
func (p SourcePolicy) client() *http.Client {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			d := *dialer
			d.Control = func(_, resolved string, _ syscall.RawConn) error {
				ap, err := netip.ParseAddrPort(resolved)
				if err != nil {
					return fmt.Errorf("%w: cannot parse dialed address %q", ErrSourceNotAllowed, resolved)
				}
				return p.CheckAddr(host, ap.Addr())
			}
			return d.DialContext(ctx, network, address)
		},
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		MaxIdleConnsPerHost:   2,
	}
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			first := via[0].URL
			if !strings.EqualFold(req.URL.Host, first.Host) {
				return fmt.Errorf("%w: redirect from %s to another host %s refused", ErrSourceNotAllowed, first.Host, req.URL.Host)
			}
			if first.Scheme == "https" && req.URL.Scheme != "https" {
				return fmt.Errorf("%w: redirect from https to %s refused", ErrSourceNotAllowed, req.URL.Scheme)
			}
			if len(via) >= 5 {
				return errors.New("more than 5 redirects")
			}
			return nil
		},
	}
}
