package enroll

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

// The machine certificates Kiln signs itself are, but for the signature, what
// x509.CreateCertificate makes of the same template, and verify under the CA.
func TestClientSignerMatchesCreateCertificate(t *testing.T) {
	e := newEnv(t)
	a := e.srv.ca
	if a.fast == nil {
		t.Fatal("a P-256 CA has no fast signer")
	}
	now := time.Now()
	long := strings.Repeat("rack-42-row-7.", 14) + "example" // long-form DER lengths
	for _, name := range []string{"web-1", "m-525400000001", "a.b-c.example", "x", long} {
		key, err := newP256()
		if err != nil {
			t.Fatal(err)
		}
		tmpl := a.clientTemplate(name, key.Public(), now.Add(-5*time.Minute), now.Add(24*time.Hour))
		der, ok, err := a.fast.issue(tmpl, key.Public())
		if err != nil || !ok {
			t.Fatalf("%s: %v %v", name, ok, err)
		}
		want, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ref, _ := x509.ParseCertificate(want)
		if !bytes.Equal(got.RawTBSCertificate, ref.RawTBSCertificate) {
			t.Fatalf("%s: to-be-signed part differs from CreateCertificate's\ngot  %x\nwant %x", name, got.RawTBSCertificate, ref.RawTBSCertificate)
		}
		if err := got.CheckSignatureFrom(a.cert); err != nil {
			t.Fatalf("%s: signature: %v", name, err)
		}
		if err := a.verifyClient(got, now); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// Outside its encoding (a GeneralizedTime) it declines, and issueClient falls back.
	key, _ := newP256()
	far := time.Date(2051, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, ok, err := a.fast.issue(a.clientTemplate("late", key.Public(), far, far.Add(time.Hour)), key.Public()); ok || err != nil {
		t.Fatalf("a 2051 certificate: ok %v err %v, want declined", ok, err)
	}
}

func BenchmarkIssueClient(b *testing.B) {
	e := newEnv(b)
	key, _ := newP256()
	for _, fast := range []bool{true, false} {
		b.Run(map[bool]string{true: "fast", false: "CreateCertificate"}[fast], func(b *testing.B) {
			a := *e.srv.ca
			if !fast {
				a.fast = nil
			}
			for b.Loop() {
				if _, err := a.issueClient("web-1", key.Public(), time.Now(), time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
