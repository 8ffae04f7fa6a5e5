package enroll

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// The server's own TLS certificates, issued from the CA and reissued in place.

// DefaultServerSANs lists the names a server certificate carries when none are
// configured: the host name, localhost, the loopback addresses and every address of
// the host's interfaces (agents often reach Kiln by IP on a provisioning LAN).
func DefaultServerSANs() []string {
	sans := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		sans = append(sans, h)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsGlobalUnicast() {
				sans = append(sans, ipn.IP.String())
			}
		}
	}
	return sans
}

// serverCerts holds the server's certificates and reissues them from the CA when two
// thirds of their lifetime have passed. Their keys live in memory only: each replica
// has its own, and agents trust the CA, not the key.
type serverCerts struct {
	ca       *authority
	dns      []string
	ips      []net.IP
	ttl      time.Duration
	withRSA  bool
	now      func() time.Time
	mu       sync.Mutex
	keys     []crypto.Signer
	current  []*tls.Certificate
	renewsAt time.Time
}

func newServerCerts(ca *authority, sans []string, ttl time.Duration, withRSA bool, now func() time.Time) (*serverCerts, error) {
	sc := &serverCerts{ca: ca, ttl: ttl, withRSA: withRSA, now: now}
	for _, s := range sans {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if ip := net.ParseIP(strings.Trim(s, "[]")); ip != nil {
			sc.ips = append(sc.ips, ip)
			continue
		}
		if !validDNSName(s) {
			return nil, fmt.Errorf("server SAN %q: not a DNS name or an IP address", s)
		}
		sc.dns = append(sc.dns, s)
	}
	if len(sc.dns)+len(sc.ips) == 0 {
		return nil, errors.New("server SANs: none")
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sc.keys = append(sc.keys, k)
	if withRSA {
		// For TLS clients without ECDSA (older iPXE builds).
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		sc.keys = append(sc.keys, rk)
	}
	if err := sc.issue(); err != nil {
		return nil, err
	}
	return sc, nil
}

// validDNSName accepts a host name for a certificate's DNS SANs, or a wildcard
// (*.name) over one.
func validDNSName(s string) bool {
	return resource.ValidHostname(strings.TrimPrefix(s, "*."))
}

// issue signs new certificates for the server's keys; the caller holds mu or owns sc.
func (sc *serverCerts) issue() error {
	now := sc.now()
	var out []*tls.Certificate
	for _, k := range sc.keys {
		cn := "kiln"
		if len(sc.dns) > 0 {
			cn = sc.dns[0]
		}
		ku := x509.KeyUsageDigitalSignature
		if _, ok := k.(*rsa.PrivateKey); ok {
			ku |= x509.KeyUsageKeyEncipherment
		}
		notAfter := now.Add(sc.ttl)
		if notAfter.After(sc.ca.cert.NotAfter) {
			notAfter = sc.ca.cert.NotAfter
		}
		tmpl := &x509.Certificate{
			SerialNumber:          randomSerial(),
			Subject:               pkix.Name{CommonName: cn, Organization: []string{"Kiln"}},
			DNSNames:              sc.dns,
			IPAddresses:           sc.ips,
			NotBefore:             now.Add(-5 * time.Minute),
			NotAfter:              notAfter,
			KeyUsage:              ku,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
		}
		c, err := sc.ca.sign(tmpl, k.Public())
		if err != nil {
			return fmt.Errorf("server certificate: %w", err)
		}
		// The chain carries the CA so that an agent can pin it by fingerprint from the
		// handshake alone.
		tc := &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k, Leaf: c}
		for _, p := range sc.ca.chain {
			tc.Certificate = append(tc.Certificate, p.Raw)
		}
		out = append(out, tc)
	}
	sc.current = out
	life := out[0].Leaf.NotAfter.Sub(now)
	sc.renewsAt = now.Add(life * 2 / 3)
	return nil
}

// get returns the certificate for a handshake, reissuing the set when it is due.
func (sc *serverCerts) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	sc.mu.Lock()
	if !sc.now().Before(sc.renewsAt) {
		if err := sc.issue(); err != nil {
			sc.mu.Unlock()
			return nil, err
		}
	}
	certs := sc.current
	sc.mu.Unlock()
	for _, c := range certs {
		if hello == nil || hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	return certs[0], nil
}
