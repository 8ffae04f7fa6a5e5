package enroll

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

// TestServerCertRenewal: the server certificate is valid from five minutes
// before it was made (clock skew) for ServerCertTTL, and is made again once two
// thirds of its life have passed, not before.
func TestServerCertRenewal(t *testing.T) {
	e := newEnv(t)
	ttl := DefaultServerCertTTL
	leaf := func() *x509.Certificate {
		t.Helper()
		c, err := e.srv.certs.get(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf
	}
	// Past the first certificate's renewal: this one is made on the test's clock.
	e.clock.Advance(ttl)
	t0 := e.clock.Now()
	first := leaf()
	if d := first.NotAfter.Sub(first.NotBefore); d != ttl+5*time.Minute {
		t.Errorf("server certificate valid for %s, want %s (five minutes of skew)", d, ttl+5*time.Minute)
	}
	if first.NotBefore.After(t0.Add(-5*time.Minute)) || first.NotBefore.Before(t0.Add(-5*time.Minute-time.Second)) {
		t.Errorf("NotBefore %v, want five minutes before %v", first.NotBefore, t0)
	}
	renew := t0.Add(first.NotAfter.Sub(t0) * 2 / 3)
	e.clock.Advance(renew.Sub(t0) - time.Second)
	if c := leaf(); c.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("renewed a second before two thirds of its life")
	}
	e.clock.Advance(2 * time.Second)
	if c := leaf(); c.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Errorf("not renewed a second after two thirds of its life")
	}
}

// TestServerCertForClient: with ServerRSA, a client that can verify ECDSA gets
// the ECDSA certificate and one that can verify only RSA the RSA one.
func TestServerCertForClient(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ServerRSA = true })
	for _, tc := range []struct {
		scheme tls.SignatureScheme
		want   string
	}{
		{tls.ECDSAWithP256AndSHA256, "ECDSA"},
		{tls.PSSWithSHA256, "RSA"},
	} {
		hello := &tls.ClientHelloInfo{
			SupportedVersions: []uint16{tls.VersionTLS13},
			SignatureSchemes:  []tls.SignatureScheme{tc.scheme},
			CipherSuites:      []uint16{tls.TLS_AES_128_GCM_SHA256},
			SupportedCurves:   []tls.CurveID{tls.CurveP256},
		}
		c, err := e.srv.certs.get(hello)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Leaf.PublicKeyAlgorithm.String(); got != tc.want {
			t.Errorf("a client offering only %v gets a %s certificate, want %s", tc.scheme, got, tc.want)
		}
	}
}

// TestIssueClientPaths: a machine certificate is valid from five minutes before
// now, made by the fast signer or, when that declines (a name outside
// PrintableString) or there is none, by crypto/x509: a valid certificate for the
// name each time.
func TestIssueClientPaths(t *testing.T) {
	e := newEnv(t)
	a := e.srv.ca
	if a.fast == nil {
		t.Fatal("no fast signer for the default CA")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := e.clock.Now()
	check := func(what, name string, pub crypto.PublicKey) {
		t.Helper()
		is, err := a.issueClient(name, pub, now, time.Hour)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		c, err := x509.ParseCertificate(is.der)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if c.Subject.CommonName != name || a.verifyClient(c, now) != nil {
			t.Errorf("%s: certificate for %q (verify: %v), want %q", what, c.Subject.CommonName, a.verifyClient(c, now), name)
		}
		if want := now.Add(-5 * time.Minute).Truncate(time.Second); !c.NotBefore.Equal(want) {
			t.Errorf("%s: NotBefore %v, want %v", what, c.NotBefore, want)
		}
	}
	check("fast signer", "web-1", key.Public())
	check("fast signer declines a name with '_'", "web_1", key.Public())
	check("an RSA key", "web-2", rk.Public())
	fast := a.fast
	a.fast = nil
	defer func() { a.fast = fast }()
	check("no fast signer", "web-3", key.Public())
}

// TestCRLNeedsCRLSign: a CA certificate whose key usage leaves out cRLSign, or
// that has no key usage extension (an imported CA can be either; crypto/x509
// refuses both), cannot sign a CRL: refused with Kiln's reason; one with cRLSign
// signs it.
func TestCRLNeedsCRLSign(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	for _, tc := range []struct {
		ku x509.KeyUsage
		ok bool
	}{
		{x509.KeyUsageCertSign, false},
		{x509.KeyUsageCertSign | x509.KeyUsageCRLSign, true},
		{0, false},
	} {
		tmpl := &x509.Certificate{SerialNumber: randomSerial(), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: tc.ku}
		tmpl.Subject.CommonName = "ca"
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		a := &authority{cert: cert, key: key}
		crl, err := a.crl(nil, now, time.Hour)
		if tc.ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), "the CA certificate has no cRLSign key usage")) {
			t.Errorf("key usage %b: CRL %d bytes, %v; want ok=%v", tc.ku, len(crl), err, tc.ok)
		}
	}
}
