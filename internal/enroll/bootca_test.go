package enroll

import (
	"github.com/kilnhq/kiln/internal/testkit"

	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"testing"

	"github.com/kilnhq/kiln/internal/store"
)

// The boot CA is created once, RSA, kept across restarts on the same store, and
// absent unless asked for.
func TestBootCAStoredAndRSA(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.BootCA = true })
	info := e.srv.BootCA()
	if info == nil {
		t.Fatal("BootCA() = nil with Config.BootCA")
	}
	if _, ok := e.srv.bootCA.cert.PublicKey.(*rsa.PublicKey); !ok {
		t.Fatalf("boot CA key %T, want RSA (iPXE verifies RSA signatures only)", e.srv.bootCA.cert.PublicKey)
	}
	if info.Fingerprint == e.srv.CAFingerprint() {
		t.Fatal("boot CA is the machine CA")
	}
	again, err := New(e.ctx, e.st, Config{DataDir: e.dir, ServerSANs: []string{"127.0.0.1"}, BootCA: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := again.BootCA().Fingerprint; got != info.Fingerprint {
		t.Fatalf("second start: boot CA %s, want the stored %s", got, info.Fingerprint)
	}
	if len(e.auditEntries("create")) == 0 {
		t.Fatal("no audit entry for the boot CA's creation")
	}
	plain := newEnv(t)
	if plain.srv.BootCA() != nil || plain.srv.CA().Boot != nil {
		t.Fatal("a boot CA without Config.BootCA")
	}
}

// A client like OVMF's HTTPS boot (TLS 1.2, RSA key exchange suites only) gets the
// RSA chain up to the boot CA and an RSA key exchange; a client offering ECDHE and
// ECDSA (curl, the agent) keeps the ECDSA chain up to the machine CA and ECDHE.
func TestBootClientsGetTheRSAChain(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.BootCA = true })
	bootPool := e.srv.bootCA.pool
	for _, tc := range []struct {
		name      string
		suites    []uint16
		roots     *x509.CertPool
		wantRSA   bool
		wantNoPFS bool
	}{
		{"firmware (RSA key exchange only)", []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA256, tls.TLS_RSA_WITH_AES_256_CBC_SHA}, bootPool, true, true},
		{"modern client", nil, e.srv.CACertPool(), false, false},
	} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: tc.roots, CipherSuites: tc.suites, MaxVersion: tls.VersionTLS12,
		}}}
		resp, err := c.Get(e.url + "/ca.crt")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		cs := resp.TLS
		leaf := cs.PeerCertificates[0]
		_, isRSA := leaf.PublicKey.(*rsa.PublicKey)
		if isRSA != tc.wantRSA {
			t.Errorf("%s: leaf key %T", tc.name, leaf.PublicKey)
		}
		if got := IsRSAKeyExchange(cs.CipherSuite); got != tc.wantNoPFS {
			t.Errorf("%s: suite %s", tc.name, tls.CipherSuiteName(cs.CipherSuite))
		}
		if tc.wantRSA && leaf.Issuer.CommonName != e.srv.bootCA.cert.Subject.CommonName {
			t.Errorf("%s: leaf issued by %s, want the boot CA", tc.name, leaf.Issuer)
		}
	}
}

// isBootClient on ClientHellos shaped like the real clients': Debian 13's iPXE offers
// ECDHE but signs with RSA only; OVMF 2022.11 offers no ECDHE; curl offers both.
func TestIsBootClient(t *testing.T) {
	rsaOnly := []tls.SignatureScheme{tls.PKCS1WithSHA256, tls.PKCS1WithSHA384, tls.PKCS1WithSHA1}
	withECDSA := append([]tls.SignatureScheme{tls.ECDSAWithP256AndSHA256}, rsaOnly...)
	ecdhe := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_128_CBC_SHA256}
	rsaKex := []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA256, tls.TLS_RSA_WITH_AES_256_CBC_SHA}
	tls13 := []uint16{tls.TLS_AES_128_GCM_SHA256}
	for _, tc := range []struct {
		name  string
		hello tls.ClientHelloInfo
		want  bool
	}{
		{"iPXE", tls.ClientHelloInfo{SignatureSchemes: rsaOnly, CipherSuites: ecdhe}, true},
		{"OVMF", tls.ClientHelloInfo{SignatureSchemes: withECDSA, CipherSuites: rsaKex}, true},
		{"curl TLS 1.2", tls.ClientHelloInfo{SignatureSchemes: withECDSA, CipherSuites: ecdhe}, false},
		{"TLS 1.3 client", tls.ClientHelloInfo{SignatureSchemes: withECDSA, CipherSuites: tls13}, false},
	} {
		if got := isBootClient(&tc.hello); got != tc.want {
			t.Errorf("%s: isBootClient = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A KEK rotation re-seals the boot CA's key with the CA's, in the rotation's
// transaction or at the next start that is given the previous key.
func TestKEKRotationResealsBootCA(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	seed(t, st)
	ctx := context.Background()
	k1, k2, k3 := make([]byte, KEKSize), make([]byte, KEKSize), make([]byte, KEKSize)
	rand.Read(k1)
	rand.Read(k2)
	rand.Read(k3)
	cfg := func(kek []byte, others ...[]byte) Config {
		return Config{KEK: kek, OtherKEKs: others, ServerSANs: []string{"localhost"}, BootCA: true}
	}
	s1, err := New(ctx, st, cfg(k1))
	if err != nil {
		t.Fatal(err)
	}
	want := s1.BootCA().Fingerprint
	if err := st.Update(ctx, func(tx store.Tx) error { _, err := s1.ResealHook(ctx, tx, k1, k2); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, st, cfg(k1)); err == nil {
		t.Fatal("the old KEK still opens the boot CA after the rotation")
	}
	s2, err := New(ctx, st, cfg(k2))
	if err != nil || s2.BootCA().Fingerprint != want {
		t.Fatalf("after rotation: %v", err)
	}
	s3, err := New(ctx, st, cfg(k3, k2))
	if err != nil || s3.BootCA().Fingerprint != want {
		t.Fatalf("re-seal at start: %v", err)
	}
	if s4, err := New(ctx, st, cfg(k3)); err != nil || s4.BootCA().Fingerprint != want {
		t.Fatalf("after re-seal at start: %v", err)
	}
}
