package enroll

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// Tests for the boot side of enrollment (the boot CA, exported boot client
// certificates, per-boot tokens and their alerts): mutants of the gremlins run at
// 2c867e0 that no test caught (TESTING.md, internal/enroll).

// TestBootCACreationAudited: creating the boot CA writes its own audit entry,
// naming it and its fingerprint.
func TestBootCACreationAudited(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.BootCA = true })
	var found []string
	for _, a := range e.auditEntries("create") {
		if a.Kind == authorityKind && a.Name == bootAuthorityName {
			found = append(found, a.Summary)
		}
	}
	if len(found) != 1 || !strings.Contains(found[0], e.srv.BootCA().Fingerprint) {
		t.Fatalf("audit entries for the boot CA's creation: %q, want one with fingerprint %s", found, e.srv.BootCA().Fingerprint)
	}
}

// TestExportBootCertTTLBounds: a boot certificate's TTL is positive and at most
// ten years (87600h), both ends inclusive of what is allowed.
func TestExportBootCertTTLBounds(t *testing.T) {
	e := newEnv(t)
	e.createMachine("ipxe-ttl", "worker", "52:54:00:c5:00:01", resource.StateNew)
	for _, c := range []struct {
		ttl string
		ok  bool
	}{
		{"1h", true},
		{"8760h", true},
		{"87600h", true},
		{"87600h1s", false},
		{"0s", false},
		{"-1h", false},
		{"a year", false},
	} {
		bc, err := e.srv.ExportBootCert(e.ctx, "token:admin", "ipxe-ttl", BootCertRequest{KeyType: "ecdsa", TTL: c.ttl})
		if !c.ok {
			var inv *InvalidError
			if !errors.As(err, &inv) || !strings.Contains(err.Error(), "ttl") {
				t.Errorf("ttl %q: %v, want refused as invalid", c.ttl, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ttl %q: %v", c.ttl, err)
			continue
		}
		d, _ := time.ParseDuration(c.ttl)
		if want := e.clock.Now().Add(d).UTC().Truncate(time.Second); !bc.NotAfter.Truncate(time.Second).Equal(want) {
			t.Errorf("ttl %q: not after %s, want %s", c.ttl, bc.NotAfter, want)
		}
	}
}

// TestIPXESafeLength: a message for iPXE's echo is cut to 200 characters.
func TestIPXESafeLength(t *testing.T) {
	for in, want := range map[string]string{
		strings.Repeat("é", 199):         strings.Repeat("é", 199),
		strings.Repeat("é", 200):         strings.Repeat("é", 200),
		strings.Repeat("é", 201):         strings.Repeat("é", 200),
		"$x#" + strings.Repeat("a", 300): "x" + strings.Repeat("a", 199),
		"a\nb\rc":                        "a b c",
	} {
		if got := ipxeSafe(in); got != want {
			t.Errorf("ipxeSafe of %d runes starting %q = %d runes starting %q, want %d runes starting %q",
				len([]rune(in)), first(in), len([]rune(got)), first(got), len([]rune(want)), first(want))
		}
	}
}

// first is the start of s, for messages.
func first(s string) string { return string([]rune(s)[:min(len([]rune(s)), 8)]) }

// TestBootTokenMintAudited: minting a per-boot token writes one audit entry naming
// the machine, its MAC and address; the same token served again writes none.
func TestBootTokenMintAudited(t *testing.T) {
	e := newEnv(t)
	e.createMachine("victim", "worker", victimMAC, resource.StateProvisioned)
	e.lease(leased, victimMAC, e.clock.Now().Add(time.Hour))
	e.startWorkflow("victim")
	for range 2 {
		if tok := cmdlineToken(bootLine(e, "victim", victimMAC, leased)); tok == "" {
			t.Fatal("no per-boot token for a reprovisioned machine at its leased address")
		}
	}
	mints := e.auditEntries("mint-boot-token")
	if len(mints) != 1 || mints[0].Name != bootTokenID("victim") {
		t.Fatalf("mint audit entries: %+v, want one for %s", mints, bootTokenID("victim"))
	}
	for _, want := range []string{"machine victim", "mac " + victimMAC, "address " + leased} {
		mustContain(t, "mint audit summary", mints[0].Summary, want)
	}
}

// TestBootTokenFirstAlertCountsOne: the first alert about a script request without
// a token counts one request, in the singular.
func TestBootTokenFirstAlertCountsOne(t *testing.T) {
	e := newEnv(t)
	e.createMachine("victim", "worker", victimMAC, resource.StateProvisioned)
	e.lease(leased, victimMAC, e.clock.Now().Add(time.Hour))
	e.startWorkflow("victim")
	bootLine(e, "victim", victimMAC, elsewhere)
	alerts := e.auditEntries("boot-token-alert")
	if len(alerts) != 1 {
		t.Fatalf("%d alerts, want 1", len(alerts))
	}
	mustContain(t, "first alert", alerts[0].Summary, "(1 script request from "+elsewhere+" since the last alert)")
}
