package enroll

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-attestation/attest"

	"github.com/kilnhq/kiln/internal/agent"
	kattest "github.com/kilnhq/kiln/internal/attest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// labTPM is a real swtpm that measured a boot, as a machine's TPM.
type labTPM struct {
	conn   *testkit.TPMConn
	ek     string             // the EK pin
	events []testkit.TPMEvent // what its boot measured
}

func bootLabTPM(t *testing.T, vendor *testkit.SWTPMCA, kernel, initrd string) *labTPM {
	t.Helper()
	conn := testkit.StartSWTPM(t, vendor.Manufacture(t)).Dial(t)
	events := testkit.UEFIBoot(kernel, initrd)
	conn.Measure(t, events)
	tpm, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: conn})
	if err != nil {
		t.Fatal(err)
	}
	eks, err := tpm.EKs()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(eks[0].Public)
	if err != nil {
		t.Fatal(err)
	}
	return &labTPM{conn: conn, ek: kattest.EKFingerprint(der), events: events}
}

func (l *labTPM) open() (*attest.TPM, error) {
	return attest.OpenTPM(&attest.OpenConfig{CommandChannel: l.conn})
}

// enrollWithTPM runs the real agent's enrollment with tpm as its TPM.
func (e *env) enrollWithTPM(tpm *labTPM, tok, mac string) (*agent.Identity, error) {
	e.t.Helper()
	id, err := agent.EnrollSession(e.ctx, agent.EnrollOptions{Server: e.url, CAFingerprint: e.srv.CAFingerprint(), Token: tok,
		Facts: facts(mac), OpenTPM: tpm.open, PollInterval: 20 * time.Millisecond, Timeout: 60 * time.Second, Dir: e.t.TempDir()})
	if id != nil {
		e.t.Cleanup(id.Close)
	}
	return id, err
}

func (e *env) pinnedMachine(name, profile, mac, ek string) {
	e.t.Helper()
	spec, _ := json.Marshal(resource.MachineSpec{Profile: profile, Interfaces: []resource.Interface{{MAC: mac}}, TPM: &resource.MachineTPM{EKSHA256: ek}})
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		return tx.Create(e.ctx, &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: name}, Spec: spec,
			Status: json.RawMessage(`{"state":"provisioning"}`)})
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// setAttestation changes a profile's spec.attestation, keeping its status (the
// learned baseline), as `kiln apply` of the profile does.
func (e *env) setAttestation(profile, policy string) {
	e.t.Helper()
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		o, err := tx.Get(e.ctx, "Profile", profile)
		if err != nil {
			return err
		}
		o = o.Clone()
		o.Spec = json.RawMessage(`{"boot":{"agent":true},"enrollment":"tpm","attestation":"` + policy + `"}`)
		return tx.Update(e.ctx, o)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) hasEvent(machine, typ, text string) bool {
	for _, ev := range e.events(machine) {
		if ev.Type == typ && strings.Contains(ev.Message, text) {
			return true
		}
	}
	return false
}

// TestTPMEnrollment runs the agent's real TPM code against real swtpm TPMs and
// Kiln's enrollment over HTTPS: the pinned machine attests and is issued; another
// TPM with the machine's MAC and token is refused with an alert; a machine without
// pin waits for an operator, whose approval pins the EK; another initrd is refused
// under enforce and alerts under warn.
func TestTPMEnrollment(t *testing.T) {
	vendor := testkit.NewSWTPMCA(t)
	tpmA := bootLabTPM(t, vendor, "vmlinuz", "agent-initrd-1")
	tpmB := bootLabTPM(t, vendor, "vmlinuz", "agent-initrd-2") // another initrd
	e := newEnv(t, func(c *Config) { c.TPMEKRoots = vendor.RootsDir(t) })
	e.setProfileSpec("tpm", `{"boot":{"agent":true},"enrollment":"tpm"}`)
	e.pinnedMachine("m-a", "tpm", "52:54:00:7a:00:01", tpmA.ek)
	e.pinnedMachine("m-b", "tpm", "52:54:00:7a:00:02", tpmB.ek)

	t.Run("another TPM with the machine's MAC and token", func(t *testing.T) {
		// The MAC-spoof attack with a stolen token, before the machine enrolls:
		// TPM B presents itself as m-a.
		tok := e.token(TokenRequest{Profile: "tpm", Machine: "m-a", MaxUses: 1})
		_, err := e.enrollWithTPM(tpmB, tok, "52:54:00:7a:00:01")
		if err == nil || !strings.Contains(err.Error(), "is not the pinned") {
			t.Fatalf("enrollment of m-a with TPM B = %v, want the EK refused", err)
		}
		e.srv.FlushRefusals(e.ctx)
		if !e.hasEvent("m-a", "EnrollAlert", "is not the pinned") {
			t.Fatalf("no EnrollAlert event on m-a: %+v", e.events("m-a"))
		}
		if e.tokenUses(tokenID(t, tok)) != 0 {
			t.Fatal("the refused enrollment used the token")
		}
	})

	t.Run("pinned machine attests", func(t *testing.T) {
		tok := e.token(TokenRequest{Profile: "tpm", Machine: "m-a", MaxUses: 1})
		id, err := e.enrollWithTPM(tpmA, tok, "52:54:00:7a:00:01")
		if err != nil {
			t.Fatalf("TPM enrollment of the pinned machine: %v", err)
		}
		if id.Machine != "m-a" {
			t.Fatalf("enrolled as %q", id.Machine)
		}
		st := machineTPM(e.machine("m-a"))
		if st.Attestation != AttestationOK || st.LastQuoteAt == nil || len(st.AKPublic) == 0 || st.EKSHA256 != tpmA.ek {
			t.Fatalf("status.tpm = %+v, want attestation ok with a quote time, the AK and the EK", st)
		}
		if len(e.auditEntries("attestation-baseline")) != 1 {
			t.Fatal("the first attested boot did not set the profile's baseline")
		}
		if e.tokenUses(tokenID(t, tok)) != 1 {
			t.Fatalf("token uses %d, want 1", e.tokenUses(tokenID(t, tok)))
		}

		// The renewal re-quotes with the same AK over a new nonce.
		e.clock.Advance(time.Second) // the agent checks the certificate against the real clock
		next, err := id.Renew(e.ctx)
		if err != nil {
			t.Fatalf("renewal of a TPM-enrolled machine: %v", err)
		}
		if next.Cert.SerialNumber.Cmp(id.Cert.SerialNumber) == 0 {
			t.Fatal("the renewal issued no new certificate")
		}
		if st2 := machineTPM(e.machine("m-a")); st2.LastQuoteAt == nil || !st2.LastQuoteAt.After(*st.LastQuoteAt) || st2.Attestation != AttestationOK {
			t.Fatalf("status.tpm after renewal = %+v, want a newer quote, attestation ok", st2)
		}
	})

	t.Run("another initrd under enforce", func(t *testing.T) {
		tok := e.token(TokenRequest{Profile: "tpm", Machine: "m-b", MaxUses: 1})
		_, err := e.enrollWithTPM(tpmB, tok, "52:54:00:7a:00:02")
		if err == nil || !strings.Contains(err.Error(), "pcr 9 changed") {
			t.Fatalf("enrollment with another initrd under enforce = %v, want refused naming pcr 9", err)
		}
		if cs := machineCertStatus(e.machine("m-b")); cs.CertFingerprint != "" {
			t.Fatal("m-b got a certificate")
		}
		if st := machineTPM(e.machine("m-b")); st.Attestation != AttestationFailed || len(st.Changes) == 0 {
			t.Fatalf("status.tpm of m-b = %+v, want failed with the changes", st)
		}
		e.srv.FlushRefusals(e.ctx)
		if !e.hasEvent("m-b", "EnrollAlert", "pcr 9 changed from") {
			t.Fatalf("no alert naming the PCR on m-b: %+v", e.events("m-b"))
		}
	})

	t.Run("another initrd under warn", func(t *testing.T) {
		e.setAttestation("tpm", resource.AttestWarn)
		tok := e.token(TokenRequest{Profile: "tpm", Machine: "m-b", MaxUses: 1})
		if _, err := e.enrollWithTPM(tpmB, tok, "52:54:00:7a:00:02"); err != nil {
			t.Fatalf("enrollment with another initrd under warn: %v", err)
		}
		if st := machineTPM(e.machine("m-b")); st.Attestation != AttestationWarned {
			t.Fatalf("status.tpm.attestation = %q, want warned", st.Attestation)
		}
		if !e.hasEvent("m-b", "AttestationAlert", "pcr 9 changed from") {
			t.Fatalf("no AttestationAlert on m-b: %+v", e.events("m-b"))
		}
		e.setAttestation("tpm", resource.AttestEnforce)
	})

	t.Run("no pin: the operator's approval pins the EK", func(t *testing.T) {
		e.createMachine("m-c", "tpm", "52:54:00:7a:00:03", "provisioning")
		tok := e.token(TokenRequest{Profile: "tpm", Machine: "m-c", MaxUses: 1})
		done := make(chan error, 1)
		go func() {
			_, err := e.enrollWithTPM(tpmA, tok, "52:54:00:7a:00:03")
			done <- err
		}()
		var id string
		for deadline := time.Now().Add(60 * time.Second); id == "" && time.Now().Before(deadline); {
			objs := e.list("Enrollment")
			for _, o := range objs {
				s, _ := resource.Typed[resource.EnrollmentSpec](o)
				if s.TPMEKSHA256 == tpmA.ek && s.State == "pending" {
					id = o.Metadata.Name
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		if id == "" {
			t.Fatal("no pending enrollment request with the TPM's EK")
		}
		if machineTPM(e.machine("m-c")).EKSHA256 != "" {
			t.Fatal("the EK was pinned before an operator approved")
		}
		if obj, err := e.srv.ApproveEnrollment(e.ctx, "token:alice", id, ""); err != nil || obj == nil || obj.Metadata.Name != id {
			t.Fatalf("approve %s: %v, %v", id, obj, err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("enrollment after approval: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("the agent did not finish after the approval")
		}
		if st := machineTPM(e.machine("m-c")); st.EKSHA256 != tpmA.ek || st.Attestation != AttestationOK {
			t.Fatalf("status.tpm of m-c = %+v, want A's EK pinned and attested", st)
		}
		// The decision is on the machine's timeline and in the audit log, naming the pin.
		if !e.hasEvent("m-c", "EnrollmentApproved", "TPM EK "+tpmA.ek+" pinned") {
			t.Errorf("no EnrollmentApproved event naming the pinned EK on m-c: %+v", e.events("m-c"))
		}
		found := false
		for _, a := range e.auditEntries("enrollment-approve") {
			found = found || strings.Contains(a.Summary, "TPM EK "+tpmA.ek+" pinned")
		}
		if !found {
			t.Error("the approval's audit entry does not name the pinned EK")
		}
	})

	t.Run("accept a machine's boot as the new baseline", func(t *testing.T) {
		if _, err := e.srv.AcceptAttestation(e.ctx, "token:admin", AcceptRequest{}); err == nil {
			t.Fatal("an accept naming neither machine nor profile was taken")
		}
		if _, err := e.srv.AcceptAttestation(e.ctx, "token:admin", AcceptRequest{Machine: "m-b"}); err != nil {
			t.Fatalf("accept m-b's boot: %v", err)
		}
		if st := machineTPM(e.machine("m-b")); st.Attestation != AttestationOK || len(st.Changes) != 0 {
			t.Fatalf("status.tpm of m-b after accept = %+v, want ok without changes", st)
		}
		if len(e.auditEntries("attestation-accept")) != 1 {
			t.Fatal("the accept was not audited")
		}
		// Another machine booting what m-b booted now attests under enforce.
		e.pinnedMachine("m-d", "tpm", "52:54:00:7a:00:04", tpmB.ek)
		tok := e.token(TokenRequest{Profile: "tpm", Machine: "m-d", MaxUses: 1})
		if _, err := e.enrollWithTPM(tpmB, tok, "52:54:00:7a:00:04"); err != nil {
			t.Fatalf("enrollment of the accepted boot under enforce: %v", err)
		}
	})
}

func (e *env) list(kind string) []*resource.Object {
	e.t.Helper()
	var out []*resource.Object
	err := e.st.View(e.ctx, func(tx store.Tx) error {
		var err error
		out, err = listAll(e.ctx, tx, kind)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// TestTPMServedKernel: the expected kernel is derived from what Kiln serves, not
// only learned. A machine whose quote shows the firmware starting a kernel other
// than the profile's (by Authenticode digest, what BootApplications returns) is
// refused under enforce even on the profile's first boot, and sets no baseline;
// under warn it enrolls with an alert naming PCR 4; the kernel Kiln served is
// recorded in status.tpm; a profile whose artifacts cannot be checked refuses
// (fail closed).
func TestTPMServedKernel(t *testing.T) {
	vendor := testkit.NewSWTPMCA(t)
	good := bootLabTPM(t, vendor, "kiln-agent-kernel", "agent-initrd")
	evil := bootLabTPM(t, vendor, "another-kernel", "agent-initrd")
	served := sha256.Sum256([]byte("kiln-agent-kernel")) // testkit's log: each digest is the sha256 of the event data
	var hookErr error
	e := newEnv(t, func(c *Config) { c.TPMEKRoots = vendor.RootsDir(t) })
	e.srv.BootApplications = func(ctx context.Context, tx store.Tx, ps *resource.ProfileSpec) (map[string]string, error) {
		if !ps.Boot.Agent {
			t.Errorf("BootApplications got profile spec %+v, want the tpm profile's", ps)
		}
		return map[string]string{hex.EncodeToString(served[:]): "kernel kiln-agent-kernel"}, hookErr
	}
	e.setProfileSpec("tpm", `{"boot":{"agent":true},"enrollment":"tpm"}`)
	e.pinnedMachine("m-evil", "tpm", "52:54:00:7b:00:01", evil.ek)
	e.pinnedMachine("m-good", "tpm", "52:54:00:7b:00:02", good.ek)

	// First boot of the profile, another kernel: refused, nothing learned.
	tok := e.token(TokenRequest{Profile: "tpm", Machine: "m-evil", MaxUses: 1})
	_, err := e.enrollWithTPM(evil, tok, "52:54:00:7b:00:01")
	if err == nil || !strings.Contains(err.Error(), "pcr 4: the booted kernel") || !strings.Contains(err.Error(), "kernel kiln-agent-kernel") {
		t.Fatalf("first boot of another kernel under enforce = %v, want refused naming pcr 4 and the served kernel", err)
	}
	if n := len(e.auditEntries("attestation-baseline")); n != 0 {
		t.Fatalf("a boot of a kernel Kiln did not serve set the baseline (%d entries)", n)
	}
	if st := machineTPM(e.machine("m-evil")); st.Attestation != AttestationFailed || machineCertStatus(e.machine("m-evil")).CertFingerprint != "" {
		t.Fatalf("m-evil: status.tpm %+v, want failed and no certificate", st)
	}

	// The served kernel: attested, recorded, the baseline learned from it.
	tok = e.token(TokenRequest{Profile: "tpm", Machine: "m-good", MaxUses: 1})
	if _, err := e.enrollWithTPM(good, tok, "52:54:00:7b:00:02"); err != nil {
		t.Fatalf("enrollment of the served kernel: %v", err)
	}
	st := machineTPM(e.machine("m-good"))
	if st.Attestation != AttestationOK || st.Measurements == nil || st.Measurements.KernelArtifact != "kernel kiln-agent-kernel" {
		t.Fatalf("m-good: status.tpm %+v, want ok with the served kernel named", st)
	}
	if n := len(e.auditEntries("attestation-baseline")); n != 1 {
		t.Fatalf("baseline entries %d, want 1 (from m-good)", n)
	}

	// warn: another kernel enrolls, with an alert naming PCR 4.
	e.setAttestation("tpm", resource.AttestWarn)
	tok = e.token(TokenRequest{Profile: "tpm", Machine: "m-evil", MaxUses: 1})
	if _, err := e.enrollWithTPM(evil, tok, "52:54:00:7b:00:01"); err != nil {
		t.Fatalf("another kernel under warn: %v", err)
	}
	if !e.hasEvent("m-evil", "AttestationAlert", "pcr 4: the booted kernel") {
		t.Fatalf("no AttestationAlert naming pcr 4: %+v", e.events("m-evil"))
	}
	if st := machineTPM(e.machine("m-evil")); st.Attestation != AttestationWarned || st.Measurements.KernelArtifact != "" {
		t.Fatalf("m-evil under warn: status.tpm %+v, want warned, no served kernel named", st)
	}

	// Artifacts that cannot be checked: refused, fail closed.
	e.setAttestation("tpm", resource.AttestEnforce)
	hookErr = errors.New("kernel artifact kiln-agent-kernel: sha256 mismatch")
	good2 := bootLabTPM(t, vendor, "kiln-agent-kernel", "agent-initrd")
	e.pinnedMachine("m-good2", "tpm", "52:54:00:7b:00:03", good2.ek)
	tok = e.token(TokenRequest{Profile: "tpm", Machine: "m-good2", MaxUses: 1})
	if _, err := e.enrollWithTPM(good2, tok, "52:54:00:7b:00:03"); err == nil || !strings.Contains(err.Error(), "cannot be checked") {
		t.Fatalf("enrollment while the profile's kernel cannot be checked = %v, want refused", err)
	}
}

// TestTPMRenewalRefusedIsRecorded: a renewal whose re-quote fails the profile's
// policy (the running machine's PCR 9 changed since it enrolled) gets no
// certificate, and the failure is written to status.tpm at once, so that secrets
// requiring attestation stop for the machine's current certificate too.
func TestTPMRenewalRefusedIsRecorded(t *testing.T) {
	vendor := testkit.NewSWTPMCA(t)
	tpm := bootLabTPM(t, vendor, "vmlinuz", "agent-initrd")
	e := newEnv(t, func(c *Config) { c.TPMEKRoots = vendor.RootsDir(t) })
	e.setProfileSpec("tpm", `{"boot":{"agent":true},"enrollment":"tpm"}`)
	e.pinnedMachine("m-r", "tpm", "52:54:00:7c:00:01", tpm.ek)
	tok := e.token(TokenRequest{Profile: "tpm", Machine: "m-r", MaxUses: 1})
	id, err := e.enrollWithTPM(tpm, tok, "52:54:00:7c:00:01")
	if err != nil {
		t.Fatalf("TPM enrollment: %v", err)
	}
	if st := machineTPM(e.machine("m-r")); st.Attestation != AttestationOK {
		t.Fatalf("status.tpm after enrollment: %+v", st)
	}
	tpm.conn.MeasureMore(t, tpm.events, []testkit.TPMEvent{{PCR: 9, Type: testkit.EvEventTag, Data: []byte("a module loaded later")}})
	e.clock.Advance(time.Second)
	if _, err := id.Renew(e.ctx); err == nil || !strings.Contains(err.Error(), "pcr 9 changed") {
		t.Fatalf("renewal after PCR 9 changed under enforce = %v, want refused naming pcr 9", err)
	}
	st := machineTPM(e.machine("m-r"))
	if st.Attestation != AttestationFailed || len(st.Changes) == 0 || st.LastQuoteAt == nil {
		t.Fatalf("status.tpm after the refused renewal = %+v, want failed with the changes", st)
	}
}
