package cli

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kilnhq/kiln/internal/enroll"
)

// The CLI verifies an https server by its CA, Kiln's own, which no system trust
// store holds. The CA is named by its SHA-256 fingerprint, from (first match):
//
//  1. --ca-fingerprint;
//  2. the data directory's ca.crt, when the server URL came from the same data
//     directory (the CLI on the server's host);
//  3. the line for the server's host:port in the known-servers file (like ssh's
//     known_hosts; --known-servers, default <user config dir>/kiln/known_servers);
//  4. none: the CA in the server's chain is trusted on first use, its fingerprint
//     printed and remembered in the known-servers file.
//
// A server whose chain does not hold the expected CA is refused, and with a
// remembered fingerprint the error says it changed and where it is remembered.
// In every case the server certificate must chain to that CA, be valid for
// server authentication (machine certificates from the same CA are not) and name
// the host the CLI connected to.

// KnownServersFile is the known-servers file's name under the user config dir.
const KnownServersFile = "known_servers"

// serverTrust decides whether the CLI trusts one https server.
type serverTrust struct {
	hostPort string // the server's host:port, the known-servers key
	host     string // for the certificate's name check
	errOut   io.Writer

	mu        sync.Mutex
	pin       string // expected CA fingerprint; "" until known
	pinSource string // where pin came from, for errors
	known     string // known-servers file; "" when none can be used
	fromKnown bool   // pin came from the known-servers file
	// noFirstUse: the server was found by DNS SRV, which anyone who can answer DNS
	// queries can forge; its CA must be pinned beforehand.
	noFirstUse bool
}

// newServerTrust resolves the pin for the server at u: e's pin (flag, variable or
// context), else e's caFile (the data dir's ca.crt when u came from the same data
// dir), else the known-servers file; a server found by DNS is not trusted on first
// use.
func newServerTrust(g *globalFlags, u *url.URL, e endpoint) (*serverTrust, error) {
	caFile := e.caFile
	port := u.Port()
	if port == "" {
		port = "443"
	}
	t := &serverTrust{hostPort: net.JoinHostPort(u.Hostname(), port), host: u.Hostname(), errOut: g.errOut, known: g.knownServers, noFirstUse: e.discovered}
	if t.known == "" {
		if d, err := os.UserConfigDir(); err == nil {
			t.known = filepath.Join(d, "kiln", KnownServersFile)
		}
	}
	switch {
	case e.pin != "":
		fp, err := enroll.NormalizeFingerprint(e.pin)
		if err != nil {
			return nil, fmt.Errorf("--ca-fingerprint %q: %w", e.pin, err)
		}
		t.pin, t.pinSource = fp, "--ca-fingerprint"
		if g.caFingerprint == "" {
			t.pinSource = "the context's ca-fingerprint"
		}
		return t, nil
	case caFile != "":
		if fp, err := caFileFingerprint(caFile); err == nil {
			t.pin, t.pinSource = fp, caFile
			return t, nil
		}
	}
	if t.known != "" {
		fp, err := lookupKnownServer(t.known, t.hostPort)
		if err != nil {
			return nil, err
		}
		if fp != "" {
			t.pin, t.pinSource, t.fromKnown = fp, t.known, true
		}
	}
	return t, nil
}

// tlsConfig verifies the server in VerifyConnection instead of against system
// roots.
func (t *serverTrust) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.host,
		InsecureSkipVerify: true, // verified by VerifyConnection against the pinned CA
		VerifyConnection:   t.verify,
	}
}

func (t *serverTrust) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("server %s sent no certificate", t.hostPort)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var ca *x509.Certificate
	if t.pin != "" {
		for _, c := range cs.PeerCertificates[1:] {
			if enroll.Fingerprint(c.Raw) == t.pin {
				ca = c
				break
			}
		}
		if ca == nil {
			presented := "none"
			if len(cs.PeerCertificates) > 1 {
				presented = "sha256:" + enroll.Fingerprint(cs.PeerCertificates[1].Raw)
			}
			if t.fromKnown {
				return fmt.Errorf("server %s: its CA fingerprint changed: it presents %s, %s remembers sha256:%s; "+
					"a replaced CA or a man in the middle: if the CA really changed (`kiln ca show` on the server), delete the line for %s from %s or pass --ca-fingerprint",
					t.hostPort, presented, t.known, t.pin, t.hostPort, t.known)
			}
			return fmt.Errorf("server %s: its certificate chain does not hold the CA with fingerprint sha256:%s (from %s), it presents %s: wrong server, or a man in the middle",
				t.hostPort, t.pin, t.pinSource, presented)
		}
	} else {
		if len(cs.PeerCertificates) < 2 {
			return fmt.Errorf("server %s sent no CA certificate to trust on first use; pass --ca-fingerprint (`kiln ca show` on the server)", t.hostPort)
		}
		ca = cs.PeerCertificates[1]
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: roots, DNSName: t.host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("server %s: certificate: %w", t.hostPort, err)
	}
	if t.pin != "" {
		return nil
	}
	// Trust on first use.
	fp := enroll.Fingerprint(ca.Raw)
	if t.noFirstUse {
		return fmt.Errorf("server %s was found by DNS SRV and presents CA sha256:%s, which nothing pins: a server found by DNS is not trusted by that alone; "+
			"pass --ca-fingerprint (kiln ca show --fingerprint on the server) or set the context's ca-fingerprint", t.hostPort, fp)
	}
	if t.known == "" {
		return fmt.Errorf("server %s presents CA sha256:%s, which nothing pins and no known-servers file can remember (no user config dir): pass --ca-fingerprint or --known-servers", t.hostPort, fp)
	}
	if err := rememberServer(t.known, t.hostPort, fp); err != nil {
		return err
	}
	t.pin, t.pinSource, t.fromKnown = fp, t.known, true
	fmt.Fprintf(t.errOut, "kiln: trusting %s on first use: CA fingerprint sha256:%s (check it with `kiln ca show` on the server), remembered in %s\n", t.hostPort, fp, t.known)
	return nil
}

// caFileFingerprint is the fingerprint of the first certificate in a PEM file.
func caFileFingerprint(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("%s: no PEM certificate", path)
	}
	return enroll.Fingerprint(block.Bytes), nil
}

// lookupKnownServer returns the remembered fingerprint of hostPort ("" if none).
// Lines are "host:port sha256-hex"; # starts a comment.
func lookupKnownServer(path, hostPort string) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read known servers: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") || fields[0] != hostPort {
			continue
		}
		if len(fields) < 2 {
			return "", fmt.Errorf("%s line %d: no fingerprint for %s", path, n, hostPort)
		}
		fp, err := enroll.NormalizeFingerprint(fields[1])
		if err != nil {
			return "", fmt.Errorf("%s line %d: %w", path, n, err)
		}
		return fp, nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read known servers %s: %w", path, err)
	}
	return "", nil
}

// rememberServer appends hostPort's fingerprint to the known-servers file.
func rememberServer(path, hostPort, fp string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("remember server %s: %w", hostPort, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("remember server %s: %w", hostPort, err)
	}
	if _, err := fmt.Fprintf(f, "%s %s\n", hostPort, fp); err != nil {
		f.Close()
		return fmt.Errorf("remember server %s in %s: %w", hostPort, path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("remember server %s in %s: %w", hostPort, path, err)
	}
	return nil
}
