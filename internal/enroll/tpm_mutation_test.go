package enroll

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/agent"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
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

// TestShortDigest: digests in messages are cut to 16 characters; a missing one is "-".
func TestShortDigest(t *testing.T) {
	for in, want := range map[string]string{"": "-", "0123456789abcdef": "0123456789abcdef", "0123456789abcdef0": "0123456789abcdef", "ab": "ab"} {
		if got := shortDigest(in); got != want {
			t.Errorf("shortDigest(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPinApprovedEK: approving a TPM request pins its EK on the machine; a
// machine pinned to another EK refuses the approval (409) and keeps its pin.
func TestPinApprovedEK(t *testing.T) {
	e := newEnv(t)
	e.createMachine("m1", "worker", "52:54:00:7a:00:0a", resource.StateNew)
	pin := func(ek string) error {
		return e.st.Update(e.ctx, func(tx store.Tx) error {
			m, err := tx.Get(e.ctx, "Machine", "m1")
			if err != nil {
				return err
			}
			return pinApprovedEK(e.ctx, tx, &binding{obj: m, name: "m1"}, &resource.EnrollmentSpec{TPMEKSHA256: ek})
		})
	}
	if err := pin("aa11"); err != nil {
		t.Fatal(err)
	}
	if got := machineTPM(e.machine("m1")).EKSHA256; got != "aa11" {
		t.Fatalf("pinned EK %q, want aa11", got)
	}
	if err := pin("aa11"); err != nil {
		t.Errorf("approving the pinned EK again: %v", err)
	}
	var ref *Refusal
	if err := pin("bb22"); !errors.As(err, &ref) || ref.Status != http.StatusConflict {
		t.Errorf("approving another EK: %v, want a 409 refusal", err)
	}
	if got := machineTPM(e.machine("m1")).EKSHA256; got != "aa11" {
		t.Errorf("pinned EK after a refused approval %q, want aa11", got)
	}
}

// TestRecordAttestationFailure: a refused quote's verdict goes to the machine's
// status.tpm without an error logged; for no machine, or one that is gone,
// nothing is written.
func TestRecordAttestationFailure(t *testing.T) {
	var logs lockedBuffer
	e := newEnv(t)
	e.srv.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	e.createMachine("m1", "worker", "52:54:00:7a:00:0b", resource.StateNew)
	e.srv.recordAttestationFailure(e.ctx, "m1", &tpmStatus{Attestation: "failed"})
	e.srv.recordAttestationFailure(e.ctx, "gone", &tpmStatus{Attestation: "failed"})
	e.srv.recordAttestationFailure(e.ctx, "", &tpmStatus{Attestation: "failed"})
	if got := machineTPM(e.machine("m1")).Attestation; got != "failed" {
		t.Errorf("status.tpm.attestation %q, want failed", got)
	}
	if out := logs.String(); strings.Contains(out, "record a failed attestation") {
		t.Errorf("an error logged:\n%s", out)
	}
}
