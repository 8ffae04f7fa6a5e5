// Package discovery finds a Kiln server by DNS SRV records (_kiln._tcp.<domain>,
// RFC 2782), for the CLI and for agents on hand-enrolled hosts that were given no
// server. It only finds where a server is: DNS is not authenticated, so a server
// found here is trusted only by the CA pin the caller already holds.
package discovery

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Service and Proto name Kiln's SRV records: _kiln._tcp.<domain>.
const (
	Service = "kiln"
	Proto   = "tcp"
)

// Target is one server an SRV record names, in the order RFC 2782 says to try it.
type Target struct {
	Host     string
	Port     uint16
	Priority uint16
	Weight   uint16
}

// URL is the https URL of the target: Kiln's API and enrollment are HTTPS when
// found by DNS (a plain-HTTP server found by an unauthenticated lookup would carry
// tokens in clear to whoever answered).
func (t Target) URL() string {
	return "https://" + net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
}

// ErrNoService is returned when the domain says, with a lone "." target (RFC 2782),
// that it offers no Kiln service.
var ErrNoService = errors.New("the domain declares no kiln service (SRV target \".\")")

// Resolver returns the resolver to use: the system's, or with server
// ("HOST:PORT", "HOST" for port 53) every query goes to that DNS server, so that a
// test or an operator can ask one server without editing /etc/resolv.conf.
func Resolver(server string) (*net.Resolver, error) {
	if server == "" {
		return net.DefaultResolver, nil
	}
	addr := server
	if _, _, err := net.SplitHostPort(server); err != nil {
		addr = net.JoinHostPort(server, "53")
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) == nil {
		return nil, fmt.Errorf("DNS server %q: not an IP address with an optional port", server)
	}
	var d net.Dialer
	return &net.Resolver{
		PreferGo: true, // the cgo resolver would ignore Dial
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}, nil
}

// Lookup returns the targets of _kiln._tcp.<domain>, ordered by priority and, within
// a priority, randomly by weight: the order RFC 2782 says to try them in (net's
// LookupSRV sorts them so).
func Lookup(ctx context.Context, r *net.Resolver, domain string) ([]Target, error) {
	domain = strings.TrimSuffix(strings.TrimSpace(domain), ".")
	if domain == "" {
		return nil, errors.New("DNS domain: empty")
	}
	name := "_" + Service + "._" + Proto + "." + domain
	_, addrs, err := r.LookupSRV(ctx, Service, Proto, domain)
	if err != nil {
		return nil, fmt.Errorf("look up SRV %s: %w", name, err)
	}
	if len(addrs) == 1 && (addrs[0].Target == "." || addrs[0].Target == "") {
		return nil, fmt.Errorf("look up SRV %s: %w", name, ErrNoService)
	}
	out := make([]Target, 0, len(addrs))
	for _, a := range addrs {
		host := strings.TrimSuffix(a.Target, ".")
		if host == "" || a.Port == 0 {
			continue // malformed: a target without a host or port cannot be tried
		}
		out = append(out, Target{Host: host, Port: a.Port, Priority: a.Priority, Weight: a.Weight})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("look up SRV %s: no usable target", name)
	}
	return out, nil
}

// SearchDomains reads the domains of resolv.conf's search (or, failing that, domain)
// line, in order. The last such line wins, as in glibc.
func SearchDomains(resolvConf io.Reader) ([]string, error) {
	var search, domain []string
	sc := bufio.NewScanner(resolvConf)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "search":
			search = nil
			for _, d := range f[1:] {
				if d = strings.TrimSuffix(d, "."); d != "" {
					search = append(search, d)
				}
			}
		case "domain":
			domain = nil
			if d := strings.TrimSuffix(f[1], "."); d != "" {
				domain = []string{d}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read resolv.conf: %w", err)
	}
	if len(search) > 0 {
		return search, nil
	}
	return domain, nil
}

// Options say where to look.
type Options struct {
	// Domains are tried in order until one has SRV records (--dns-domain, else
	// resolv.conf's search list).
	Domains []string
	// Resolver; nil is the system's.
	Resolver *net.Resolver
	// DialTimeout bounds the TCP check of each target; 0 is 3 s.
	DialTimeout time.Duration
}

// Find returns the URL of the first target that accepts a TCP connection, trying
// each domain's targets in RFC 2782 order: a server that is down is skipped as the
// RFC asks, without waiting for an HTTPS request to time out.
func Find(ctx context.Context, opts Options) (string, error) {
	if len(opts.Domains) == 0 {
		return "", errors.New("no DNS domain to look up _kiln._tcp in: pass --dns-domain or set a search domain in /etc/resolv.conf")
	}
	r := opts.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	timeout := opts.DialTimeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	var errs []error
	for _, domain := range opts.Domains {
		targets, err := Lookup(ctx, r, domain)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, t := range targets {
			// The target's name is resolved with the same resolver as the SRV record.
			d := net.Dialer{Timeout: timeout, Resolver: r}
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))))
			if err != nil {
				errs = append(errs, fmt.Errorf("SRV target %s (priority %d): %w", t.URL(), t.Priority, err))
				continue
			}
			c.Close()
			return t.URL(), nil
		}
	}
	return "", fmt.Errorf("find kiln by DNS SRV: %w", errors.Join(errs...))
}
