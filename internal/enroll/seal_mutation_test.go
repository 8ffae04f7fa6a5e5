package enroll

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
)

// TestSealBounds: an empty value seals and opens (its sealed form is exactly a
// nonce and a tag long); a sealed value shorter than a nonce and a tag is
// refused as malformed, whatever its length, never opened.
func TestSealBounds(t *testing.T) {
	s, err := newSealer(make([]byte, KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.seal("purpose", nil)
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := s.open("purpose", sealed); err != nil || len(plain) != 0 {
		t.Errorf("an empty value sealed and opened: %q, %v", plain, err)
	}
	for _, n := range []int{0, 1, s.aead.NonceSize() - 1, s.aead.NonceSize(), s.aead.NonceSize() + s.aead.Overhead() - 1} {
		short := sealPrefix + base64.StdEncoding.EncodeToString(make([]byte, n))
		if _, err := s.open("purpose", short); err == nil || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("a sealed value of %d bytes: %v, want malformed", n, err)
		}
	}
}

// TestServerSANs: the server certificate names the SANs configured, and only
// without any the defaults (localhost and this host's addresses).
func TestServerSANs(t *testing.T) {
	names := func(cfg Config) []string {
		t.Helper()
		dir := t.TempDir()
		cfg.DataDir = dir
		srv, err := New(context.Background(), testkit.OpenSQLite(t, dir), cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := srv.certs.get(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		out := slices.Clone(leaf.DNSNames)
		for _, ip := range leaf.IPAddresses {
			out = append(out, ip.String())
		}
		return out
	}
	if got := names(Config{ServerSANs: []string{"kiln.example.test", "192.0.2.7"}}); !slices.Equal(got, []string{"kiln.example.test", "192.0.2.7"}) {
		t.Errorf("configured SANs: the certificate names %v", got)
	}
	if got := names(Config{}); !slices.Contains(got, "localhost") || !slices.Contains(got, "127.0.0.1") {
		t.Errorf("default SANs: the certificate names %v, want localhost and 127.0.0.1 among them", got)
	}
}
