package enroll

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// An imported CA must be allowed to sign certificates: a keyUsage extension without
// keyCertSign is refused; no keyUsage extension at all (RFC 5280 leaves it
// unrestricted) is accepted.
func TestImportCAKeyUsage(t *testing.T) {
	key, err := newP256()
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	now := time.Now()
	for _, tc := range []struct {
		name    string
		usage   x509.KeyUsage
		wantErr string
	}{
		{"keyCertSign", x509.KeyUsageCertSign | x509.KeyUsageCRLSign, ""},
		{"no keyUsage extension", 0, ""},
		{"digitalSignature only", x509.KeyUsageDigitalSignature, "may not sign certificates"},
		{"cRLSign only", x509.KeyUsageCRLSign, "may not sign certificates"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := &x509.Certificate{SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "Operator CA"},
				NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: tc.usage}
			certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
			if err != nil {
				t.Fatal(err)
			}
			if c, _ := x509.ParseCertificate(certDER); c.KeyUsage != tc.usage {
				t.Fatalf("the certificate has key usage %b, want %b", c.KeyUsage, tc.usage)
			}
			ca, err := parseImport(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), keyPEM, now)
			if tc.wantErr == "" {
				if err != nil || len(ca.certs) != 1 {
					t.Fatalf("refused: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// A stored JoinToken without maxUses (a manifest that leaves it out) sets no use
// limit: the signed token carries none, so the stored object does not narrow it.
func TestStoredTokenWithoutMaxUses(t *testing.T) {
	e := newEnv(t)
	tok := e.token(TokenRequest{MaxUses: 1, TTL: "24h"})
	id := tokenID(t, tok)
	e.applyTokenManifest(e.object("JoinToken", id), func(s *resource.JoinTokenSpec) { s.MaxUses = 0 })
	for i := range 3 {
		if code, _, msg := e.enroll(e.newAgent(), tok, facts(fmt.Sprintf("52:54:00:00:06:%02x", i))); code != http.StatusOK {
			t.Fatalf("enrollment %d: %d %s", i+1, code, msg)
		}
	}
	if n := e.tokenUses(id); n != 3 {
		t.Fatalf("uses %d, want 3", n)
	}
}

// Registration by MAC: the reported MACs may all be one machine's; MACs of two
// machines are refused, whichever MAC comes first.
func TestRegisterByMACSeveralMACs(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RegisterByMAC = true })
	create := func(name string, macs ...string) {
		var ifs []resource.Interface
		for _, m := range macs {
			ifs = append(ifs, resource.Interface{MAC: m})
		}
		spec, _ := json.Marshal(resource.MachineSpec{Profile: "worker", Interfaces: ifs})
		err := e.st.Update(e.ctx, func(tx store.Tx) error {
			return tx.Create(e.ctx, &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: name}, Spec: spec,
				Status: json.RawMessage(`{"state":"` + resource.StateProvisioning + `"}`)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	create("two-nics", "52:54:00:00:07:01", "52:54:00:00:07:02")
	create("other", "52:54:00:00:07:03")
	reported := func(macs ...string) map[string]any {
		var ifs []any
		for i, m := range macs {
			ifs = append(ifs, map[string]any{"name": fmt.Sprintf("eth%d", i), "mac": m})
		}
		return map[string]any{"interfaces": ifs}
	}
	for _, macs := range [][]string{
		{"52:54:00:00:07:01", "52:54:00:00:07:03"},
		{"52:54:00:00:07:03", "52:54:00:00:07:02"},
	} {
		if code, _, msg := e.enroll(e.newAgent(), "", reported(macs...)); code != http.StatusForbidden || !strings.Contains(msg, "several machines") {
			t.Fatalf("MACs %v of two machines: %d %s", macs, code, msg)
		}
	}
	code, resp, msg := e.enroll(e.newAgent(), "", reported("52:54:00:00:07:01", "52:54:00:00:07:02"))
	if code != http.StatusOK || resp.Machine != "two-nics" {
		t.Fatalf("both MACs of one machine: %d %s", code, msg)
	}
}

// timeOrDash writes an optional time for a refusal: RFC 3339 in UTC, "-" for none.
func TestTimeOrDash(t *testing.T) {
	at := time.Date(2026, 12, 7, 16, 0, 0, 0, time.FixedZone("CET", 3600))
	if got := timeOrDash(&at); got != "2026-12-07T15:00:00Z" {
		t.Errorf("timeOrDash(%s) = %q", at, got)
	}
	if got := timeOrDash(nil); got != "-" {
		t.Errorf("timeOrDash(nil) = %q", got)
	}
}
