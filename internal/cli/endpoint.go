package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/discovery"
	"github.com/kilnhq/kiln/internal/enroll"
	"github.com/kilnhq/kiln/internal/server"
)

// ResolvConf is where the search domains for the DNS SRV lookup come from.
const ResolvConf = "/etc/resolv.conf"

// discoveryTimeout bounds the DNS SRV lookup and the TCP check of its targets, so
// that a command on a host with a slow resolver falls back quickly.
const discoveryTimeout = 5 * time.Second

// endpoint is the server a command talks to, how it is trusted and the token sent.
type endpoint struct {
	base  string
	token string
	// pin is the CA fingerprint the server must present ("" when none is given:
	// caFile, the known-servers file or trust on first use decide).
	pin    string
	caFile string // the data dir's ca.crt, when base came from the same data dir
	// discovered: found by DNS SRV. DNS is not authenticated, so such a server is
	// trusted only by a pin (flag, variable, context or the known-servers file),
	// never on first use.
	discovered bool
}

// resolveEndpoint decides each setting, first match: flag, its KILN_* variable
// (bound to the flag), the context, then the defaults (README "Client
// configuration"). A context's token and CA pin go only to the context's server.
func resolveEndpoint(g *globalFlags) (endpoint, error) {
	e := endpoint{base: g.server, token: g.token, pin: g.caFingerprint}
	dataDirURL, dataDirCA := "", ""
	if b, err := os.ReadFile(filepath.Join(g.dataDir, server.ServerURLFile)); err == nil {
		dataDirURL = strings.TrimSpace(string(b))
		dataDirCA = filepath.Join(g.dataDir, enroll.CACertFileName)
	}
	if e.base == "" && g.dataDirSet && dataDirURL != "" {
		e.base, e.caFile = dataDirURL, dataDirCA // --data-dir named this server
	}
	c, err := activeContext(g)
	if err != nil {
		return e, err
	}
	fromContext := false
	if c != nil {
		switch {
		case e.base == "" && c.Server != "":
			e.base, fromContext = c.Server, true
		case e.base == "" && c.DNSDomain != "":
			if e.base, err = discover(g, []string{c.DNSDomain}); err != nil {
				return e, fmt.Errorf("context %q: %w", c.Name, err)
			}
			e.discovered, fromContext = true, true
		}
		if fromContext {
			if e.token == "" {
				if e.token, err = contextToken(g, c); err != nil {
					return e, err
				}
			}
			e.pin = cmp.Or(e.pin, c.CAFingerprint)
		}
	}
	if e.base == "" && dataDirURL != "" {
		e.base, e.caFile = dataDirURL, dataDirCA
	}
	if e.base == "" {
		domains, explicit := dnsDomains(g)
		if len(domains) > 0 {
			base, err := discover(g, domains)
			switch {
			case err == nil:
				e.base, e.discovered = base, true
			case explicit:
				return e, err // asked for by --dns-domain: say why it failed
			}
		}
	}
	if e.base == "" {
		e.base = "http://127.0.0.1:8080"
	}
	if e.token == "" {
		// A person who ran kiln login acts as themselves, also on the server host.
		base := e.base
		if !strings.Contains(base, "://") {
			base = "http://" + base
		}
		e.token = loginToken(strings.TrimRight(base, "/"), time.Now())
	}
	// A context's server gets the context's credentials (or none), never the data
	// dir's admin token, which is for the server of this host.
	if e.token == "" && !fromContext {
		b, err := os.ReadFile(filepath.Join(g.dataDir, server.AdminTokenFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return e, fmt.Errorf("read API token: %w", err)
		}
		e.token = strings.TrimSpace(string(b))
	}
	return e, nil
}

// dnsDomains are the domains to look _kiln._tcp up in: --dns-domain (explicit),
// else resolv.conf's search list.
func dnsDomains(g *globalFlags) (domains []string, explicit bool) {
	if g.dnsDomain != "" {
		return []string{g.dnsDomain}, true
	}
	f, err := os.Open(ResolvConf)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	domains, _ = discovery.SearchDomains(f)
	return domains, false
}

// discover finds the server by DNS SRV in domains.
func discover(g *globalFlags, domains []string) (string, error) {
	r, err := discovery.Resolver(g.dnsServer)
	if err != nil {
		return "", fmt.Errorf("--dns-server: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), discoveryTimeout)
	defer cancel()
	return discovery.Find(ctx, discovery.Options{Domains: domains, Resolver: r})
}
