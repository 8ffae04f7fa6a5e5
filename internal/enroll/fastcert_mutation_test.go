package enroll

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"
)

// The fast signer encodes times as UTCTime and the name as a PrintableString only:
// RFC 5280 section 4.1.2.5 has UTCTime for 1950 to 2049 (a two-digit year, "50" to
// "49") and GeneralizedTime from 2050. A template outside that is declined (ok false,
// so issueClient uses CreateCertificate), each time on its own; one inside it is
// signed exactly as CreateCertificate signs it.
func TestClientSignerTimeAndNameRange(t *testing.T) {
	e := newEnv(t)
	a := e.srv.ca
	if a.fast == nil {
		t.Fatal("a P-256 CA has no fast signer")
	}
	date := func(y int, m time.Month) time.Time { return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC) }
	cases := []struct {
		name                string
		machine             string
		notBefore, notAfter time.Time
		ok                  bool
	}{
		{"not before 1950", "web-1", date(1949, 12), date(1951, 1), false},
		{"1950 to 1951", "web-1", date(1950, 6), date(1951, 1), true},
		{"2048 to 2049", "web-1", date(2048, 1), date(2049, 12), true},
		{"not after in 2050", "web-1", date(2049, 6), date(2050, 6), false},
		// clientTemplate clamps notAfter to the CA's, so notBefore can pass it.
		{"not before in 2050, not after in 2049", "web-1", date(2050, 6), date(2049, 6), false},
		{"underscore in the name", "web_1", date(2049, 1), date(2049, 6), false},
		{"non-ASCII name", "wéb-1", date(2049, 1), date(2049, 6), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key, err := newP256()
			if err != nil {
				t.Fatal(err)
			}
			tmpl := a.clientTemplate(tc.machine, key.Public(), tc.notBefore, tc.notAfter)
			tmpl.NotAfter = tc.notAfter // past the CA's own notAfter: only the encoding is tested
			der, ok, err := a.fast.issue(tmpl, key.Public())
			if err != nil || ok != tc.ok {
				t.Fatalf("ok %v, err %v; want ok %v", ok, err, tc.ok)
			}
			if !ok {
				return
			}
			want, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := x509.ParseCertificate(want)
			if !bytes.Equal(got.RawTBSCertificate, ref.RawTBSCertificate) || !got.NotBefore.Equal(tc.notBefore) || !got.NotAfter.Equal(tc.notAfter) {
				t.Fatalf("valid %s to %s, want %s to %s (or the encoding differs from CreateCertificate's)", got.NotBefore, got.NotAfter, tc.notBefore, tc.notAfter)
			}
		})
	}
}

// printable is PrintableString's alphabet, checked over the whole string.
func TestPrintable(t *testing.T) {
	for s, want := range map[string]bool{
		"": false, "web-1": true, "A.b-c:d=e?(f)+g,h'i/j k": true,
		"web_1": false, "a*b": false, "wéb": false, "web-1_": false,
	} {
		if got := printable(s); got != want {
			t.Errorf("printable(%q) = %v, want %v", s, got, want)
		}
	}
}
