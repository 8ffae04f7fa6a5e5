package attest

import (
	"crypto"
	"crypto/sha256"
	"testing"

	"github.com/google/go-attestation/attest"

	"github.com/kilnhq/kiln/internal/testkit"
)

// FuzzParseEventLog feeds Kiln's wrapper of the event-log parser untrusted bytes,
// then replays what parsed against PCR values taken from the input: it must return
// an error or events, never panic, whatever the machine sends.
func FuzzParseEventLog(f *testing.F) {
	log, _ := testkit.TCGEventLog(testkit.UEFIBoot("vmlinuz", "initrd"))
	f.Add(log)
	f.Add(log[:40])
	f.Add([]byte{})
	short, _ := testkit.TCGEventLog(nil)
	f.Add(short)
	f.Fuzz(func(t *testing.T, raw []byte) {
		el, err := ParseEventLog(raw)
		if err != nil {
			return
		}
		// PCR values the log replays to (so the extraction runs too), computed
		// here independently of go-attestation's replay.
		values := map[int][]byte{}
		for _, i := range MeasuredPCRs() {
			values[i] = make([]byte, 32)
		}
		for _, e := range el.Events(attest.HashSHA256) {
			if _, ok := values[e.Index]; !ok || e.Type == 0x3 || len(e.Digest) != 32 {
				continue
			}
			h := sha256.New()
			h.Write(values[e.Index])
			h.Write(e.Digest)
			values[e.Index] = h.Sum(nil)
		}
		var pcrs []attest.PCR
		for i, v := range values {
			pcrs = append(pcrs, attest.PCR{Index: i, Digest: v, DigestAlg: crypto.SHA256})
		}
		events, err := el.Verify(pcrs)
		if err != nil {
			return
		}
		if _, err := extractMeasurements(values, events); err != nil {
			return
		}
	})
}
