package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

// setTPMStatus writes a machine's status.tpm as the enroll package does after a
// quote: verdict and quote time (nil: no quote).
func (e *env) setTPMStatus(machine, verdict string, quotedAt *time.Time) {
	e.t.Helper()
	err := e.store.Update(context.Background(), func(tx store.Tx) error {
		m, err := tx.Get(context.Background(), "Machine", machine)
		if err != nil {
			return err
		}
		st := map[string]any{"state": "provisioning"}
		if quotedAt != nil {
			st["tpm"] = map[string]any{"attestation": verdict, "lastQuoteAt": quotedAt}
		}
		m.Status, _ = json.Marshal(st)
		return tx.Update(context.Background(), m)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// TestAttestedRelease: a Secret with attested: true is released only to a machine
// whose last TPM quote passed and is younger than attestedWithin; every other case
// is a denial, audited, and nothing released.
func TestAttestedRelease(t *testing.T) {
	e := newFleet(t)
	e.apply(`
kind: Secret
metadata: {name: api-token}
spec: {machines: [web-1], attested: true, attestedWithin: 15m}
`)
	now := e.clock.Now()
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	cases := []struct {
		name     string
		verdict  string
		quotedAt *time.Time
		want     string // "" released, else in the denial
	}{
		{"fresh ok quote", "ok", ago(time.Minute), ""},
		{"fresh quote under warn", "warned", ago(time.Minute), ""},
		{"no quote", "", nil, "has no verified TPM quote"},
		{"failed quote", "failed", ago(time.Minute), "failed its measured-boot policy"},
		{"stale quote", "ok", ago(16 * time.Minute), "younger than 15m0s"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.setTPMStatus("web-1", c.verdict, c.quotedAt)
			denials := countAudit(e.auditEntries(), "deny", "api-token")
			rel, err := e.svc.Fetch(context.Background(), "web-1", "api-token")
			if c.want == "" {
				if err != nil || string(rel.Value) != apiToken {
					t.Fatalf("Fetch = %v, want the value released", err)
				}
				return
			}
			if !errors.Is(err, ErrDenied) || rel != nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Fetch = %v, want ErrDenied naming %q and nothing released", err, c.want)
			}
			if countAudit(e.auditEntries(), "deny", "api-token") != denials+1 {
				t.Error("the denial was not audited")
			}
		})
	}
}
