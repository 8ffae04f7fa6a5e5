package attest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// tpmLab is two TPMs of one vendor (a and b, as two machines) and one of another
// vendor, each a real swtpm that measured a boot into its PCRs.
type tpmLab struct {
	a, b, foreign *machineTPM
	roots         *EKRoots
}

func newTPMLab(t *testing.T) *tpmLab {
	t.Helper()
	vendor := testkit.NewSWTPMCA(t)
	stateA, stateB := vendor.Manufacture(t), vendor.Manufacture(t)
	other := testkit.NewSWTPMCA(t)
	stateF := other.Manufacture(t)
	roots, err := LoadEKRoots(vendor.RootsDir(t))
	if err != nil {
		t.Fatalf("LoadEKRoots: %v", err)
	}
	boot := testkit.UEFIBoot("vmlinuz-6.1", "agent-initrd-1")
	return &tpmLab{
		a: bootTPM(t, stateA, boot, true),
		// b booted another initrd: its measurements differ from a's in PCR 9.
		b:       bootTPM(t, stateB, testkit.UEFIBoot("vmlinuz-6.1", "agent-initrd-2"), true),
		foreign: bootTPM(t, stateF, boot, false),
		roots:   roots,
	}
}

// TestAttestation runs against real swtpm TPMs: the honest machine's enrollment and
// renewal, then every way an answer can be wrong, each tried as an attacker would.
// One lab for all: manufacturing a TPM and its keys takes seconds.
func TestAttestation(t *testing.T) {
	lab := newTPMLab(t)
	t.Run("honest machine", func(t *testing.T) { testHonestMachine(t, lab) })
	t.Run("refusals", func(t *testing.T) { testRefusals(t, lab) })
}

func testHonestMachine(t *testing.T, lab *tpmLab) {
	m := lab.a
	ek := m.parsedEK(t)
	if err := CheckEK(ek, ek.SHA256, lab.roots); err != nil {
		t.Fatalf("CheckEK of a pinned, vendor-certified EK: %v", err)
	}
	c := NewChallenges(0, 0, nil)
	ch, err := c.Activation("web-1", ek, m.akParams())
	if err != nil {
		t.Fatalf("Activation: %v", err)
	}
	res, err := c.Verify(ch.ID, "web-1", m.answer(t, ch))
	if err != nil {
		t.Fatalf("Verify of the honest answer: %v", err)
	}
	if res.EKSHA256 != ek.SHA256 || res.Machine != "web-1" || len(res.AKPublic) == 0 {
		t.Errorf("result = %+v, want the machine, its EK and its AK", res)
	}
	got := res.Measurements
	boot := testkit.UEFIBoot("vmlinuz-6.1", "agent-initrd-1")
	_, digests := testkit.TCGEventLog(boot)
	hexOf := func(i int) string { return strings.ToLower(hexString(digests[i][:])) }
	if got.Kernel != hexOf(10) || got.Initrd != hexOf(12) {
		t.Errorf("kernel %s initrd %s, want %s %s", got.Kernel, got.Initrd, hexOf(10), hexOf(12))
	}
	if len(got.BootApplications) != 2 || len(got.Firmware) != 1 {
		t.Errorf("boot applications %v firmware %v, want 2 and 1", got.BootApplications, got.Firmware)
	}
	if len(got.PCRs) != len(MeasuredPCRs()) || got.PCRs[8] != strings.Repeat("0", 64) {
		t.Errorf("pcrs = %v, want the 11 measured ones, pcr 8 unextended", got.PCRs)
	}
	if c.Pending() != 0 {
		t.Errorf("%d challenges pending after the answer, want 0", c.Pending())
	}

	// b booted another initrd: the change names PCR 9, its old and new value, and
	// the event (the Linux initrd tag) that differs.
	chB, err := c.Activation("web-2", lab.b.parsedEK(t), lab.b.akParams())
	if err != nil {
		t.Fatal(err)
	}
	resB, err := c.Verify(chB.ID, "web-2", lab.b.answer(t, chB))
	if err != nil {
		t.Fatalf("Verify of b: %v", err)
	}
	changes := Compare(got, resB.Measurements)
	if len(changes) != 1 || changes[0].PCR != 9 || changes[0].From != got.PCRs[9] || changes[0].To != resB.Measurements.PCRs[9] ||
		!strings.Contains(changes[0].Event, "event 0 EV_EVENT_TAG: "+got.Initrd[:16]) {
		t.Errorf("Compare(a, b) = %+v, want one change of pcr 9 naming the initrd event", changes)
	}
	if len(Compare(got, got)) != 0 {
		t.Errorf("Compare of a measurement with itself is not empty")
	}

	// A renewal: a re-quote by the activated AK, no credential.
	rq, err := c.Requote("web-1", res.EKSHA256, res.AKPublic)
	if err != nil {
		t.Fatalf("Requote: %v", err)
	}
	if len(rq.Credential) != 0 {
		t.Errorf("a re-quote carries a credential")
	}
	if _, err := c.Verify(rq.ID, "web-1", m.quote(t, rq.Nonce)); err != nil {
		t.Fatalf("Verify of an honest re-quote: %v", err)
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}

func testRefusals(t *testing.T, lab *tpmLab) {
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	c := NewChallenges(time.Minute, 0, clock)
	ekA := lab.a.parsedEK(t)

	t.Run("wrong nonce", func(t *testing.T) {
		ch, err := c.Activation("web-1", ekA, lab.a.akParams())
		if err != nil {
			t.Fatal(err)
		}
		secret, err := lab.a.activate(ch)
		if err != nil {
			t.Fatal(err)
		}
		a := lab.a.quote(t, bytes.Repeat([]byte{7}, 32))
		a.ActivatedSecret = secret
		wantErr(t, c, ch.ID, "web-1", a, "quote")
	})

	t.Run("replayed quote", func(t *testing.T) {
		ch, err := c.Activation("web-1", ekA, lab.a.akParams())
		if err != nil {
			t.Fatal(err)
		}
		a := lab.a.answer(t, ch)
		if _, err := c.Verify(ch.ID, "web-1", a); err != nil {
			t.Fatalf("first answer: %v", err)
		}
		// The same answer again, to the same challenge: used up.
		wantErr(t, c, ch.ID, "web-1", a, "already answered")
		// The old quote to a new re-quote challenge: its nonce is not the new one.
		rq, err := c.Requote("web-1", ekA.SHA256, lab.a.akParams().Public)
		if err != nil {
			t.Fatal(err)
		}
		a.ActivatedSecret = nil
		wantErr(t, c, rq.ID, "web-1", a, "quote")
	})

	t.Run("event log that does not replay", func(t *testing.T) {
		ch, err := c.Activation("web-1", ekA, lab.a.akParams())
		if err != nil {
			t.Fatal(err)
		}
		a := lab.a.answer(t, ch)
		// The log of another kernel than the one the TPM measured: the replay of
		// PCR 4 ends elsewhere than the quoted value.
		a.EventLog, _ = testkit.TCGEventLog(testkit.UEFIBoot("vmlinuz-expected", "agent-initrd-1"))
		wantErr(t, c, ch.ID, "web-1", a, "does not replay")
	})

	t.Run("event log without a measured pcr's events", func(t *testing.T) {
		ch, err := c.Activation("web-1", ekA, lab.a.akParams())
		if err != nil {
			t.Fatal(err)
		}
		a := lab.a.answer(t, ch)
		// Leave out PCR 9 (the initrd): go-attestation alone would accept this.
		var kept []testkit.TPMEvent
		for _, m := range testkit.UEFIBoot("vmlinuz-6.1", "agent-initrd-1") {
			if m.PCR != 9 {
				kept = append(kept, m)
			}
		}
		a.EventLog, _ = testkit.TCGEventLog(kept)
		wantErr(t, c, ch.ID, "web-1", a, "pcr 9 holds")
	})

	t.Run("different EK than the pin", func(t *testing.T) {
		ekB := lab.b.parsedEK(t)
		err := CheckEK(ekB, ekA.SHA256, lab.roots)
		if !errors.Is(err, ErrEKMismatch) {
			t.Fatalf("CheckEK(B's EK, A's pin) = %v, want ErrEKMismatch", err)
		}
	})

	t.Run("pinned EK claimed by a machine with another TPM", func(t *testing.T) {
		// B sends A's EK (public, certificate) and its own AK: Kiln encrypts the
		// credential to A's EK, which B's TPM cannot decrypt.
		ch, err := c.Activation("web-1", ekA, lab.b.akParams())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lab.b.activate(ch); err == nil {
			t.Fatal("TPM B activated a credential made for TPM A's EK")
		}
		// Its best guess is refused, and the challenge is then used up.
		a := lab.b.quote(t, ch.Nonce)
		a.ActivatedSecret = bytes.Repeat([]byte{1}, 32)
		wantErr(t, c, ch.ID, "web-1", a, "credential activation")
	})

	t.Run("AK of another TPM than the EK", func(t *testing.T) {
		// A's EK with B's AK: A's TPM decrypts only for an AK it holds.
		ch, err := c.Activation("web-1", ekA, lab.b.akParams())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lab.a.activate(ch); err == nil {
			t.Fatal("TPM A activated a credential for an AK it does not hold")
		}
	})

	t.Run("wrong credential answer", func(t *testing.T) {
		ch, err := c.Activation("web-1", ekA, lab.a.akParams())
		if err != nil {
			t.Fatal(err)
		}
		a := lab.a.answer(t, ch)
		a.ActivatedSecret[0] ^= 1
		wantErr(t, c, ch.ID, "web-1", a, "credential activation")
	})

	t.Run("bad EK certificate chain", func(t *testing.T) {
		err := CheckEK(lab.foreign.parsedEK(t), "", lab.roots)
		if err == nil || !strings.Contains(err.Error(), "not issued by a configured TPM vendor root") {
			t.Fatalf("CheckEK of another vendor's EK = %v, want a chain refusal", err)
		}
		noCert, err := ParseEK(lab.a.ekPub, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckEK(noCert, "", lab.roots); err == nil {
			t.Fatal("an EK without certificate passed configured roots")
		}
	})

	t.Run("EK certificate of another key", func(t *testing.T) {
		if _, err := ParseEK(lab.b.ekPub, lab.a.ekCertDER()); err == nil || !strings.Contains(err.Error(), "another key") {
			t.Fatalf("ParseEK(B's key, A's certificate) = %v, want a refusal", err)
		}
	})

	t.Run("tampered AK creation", func(t *testing.T) {
		p := lab.a.akParams()
		p.CreateSignature = bytes.Clone(p.CreateSignature)
		p.CreateSignature[len(p.CreateSignature)-1] ^= 1
		if _, err := c.Activation("web-1", ekA, p); err == nil {
			t.Fatal("Activation accepted an AK whose creation signature is broken")
		}
	})

	t.Run("expired challenge", func(t *testing.T) {
		ch, err := c.Activation("web-1", ekA, lab.a.akParams())
		if err != nil {
			t.Fatal(err)
		}
		a := lab.a.answer(t, ch)
		now = now.Add(time.Minute)
		defer func() { now = now.Add(-time.Minute) }()
		wantErr(t, c, ch.ID, "web-1", a, "expired")
	})

	t.Run("challenge of another machine", func(t *testing.T) {
		ch, err := c.Activation("web-1", ekA, lab.a.akParams())
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, c, ch.ID, "web-2", lab.a.answer(t, ch), "another machine")
	})

	t.Run("re-quote by another AK", func(t *testing.T) {
		rq, err := c.Requote("web-1", ekA.SHA256, lab.a.akParams().Public)
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, c, rq.ID, "web-1", lab.b.quote(t, rq.Nonce), "quote")
	})
}

func wantErr(t *testing.T, c *Challenges, id, machine string, a Answer, want string) {
	t.Helper()
	_, err := c.Verify(id, machine, a)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Verify = %v, want an error containing %q", err, want)
	}
}
