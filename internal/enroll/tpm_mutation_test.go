package enroll

import (
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/agent"
	"github.com/kilnhq/kiln/internal/testkit"
)

// TestTPMUncertifiedEKRefused: with vendor roots configured, an unpinned machine
// whose TPM's EK certificate no root vouches for is refused at once (a sign of
// attack: alerted), never held for an operator's approval.
func TestTPMUncertifiedEKRefused(t *testing.T) {
	vendor, other := testkit.NewSWTPMCA(t), testkit.NewSWTPMCA(t)
	tpm := bootLabTPM(t, other, "vmlinuz", "agent-initrd-1")
	vendor.Manufacture(t) // the vendor's root exists once it made a TPM
	e := newEnv(t, func(c *Config) { c.TPMEKRoots = vendor.RootsDir(t) })
	e.setProfileSpec("tpm", `{"boot":{"agent":true},"enrollment":"tpm"}`)
	tok := e.token(TokenRequest{Profile: "tpm", MaxUses: 1})
	_, err := agent.EnrollSession(e.ctx, agent.EnrollOptions{Server: e.url, CAFingerprint: e.srv.CAFingerprint(), Token: tok,
		Facts: facts("52:54:00:7a:00:09"), OpenTPM: tpm.open, PollInterval: 20 * time.Millisecond, Timeout: 10 * time.Second, Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "TPM") || strings.Contains(err.Error(), "pending") || strings.Contains(err.Error(), "timed out") {
		t.Fatalf("enrollment with another vendor's TPM: %v, want refused naming the TPM", err)
	}
	if n := e.count(enrollmentKind); n != 0 {
		t.Errorf("%d enrollment requests held, want none", n)
	}
	e.srv.FlushRefusals(e.ctx)
	if n := len(e.auditEntries("enroll-alert")); n != 1 {
		t.Errorf("%d enroll-alert audit entries, want 1", n)
	}
}
