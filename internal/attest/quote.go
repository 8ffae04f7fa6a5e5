package attest

import (
	"crypto"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-attestation/attest"
)

// MeasuredPCRs are the PCRs Kiln requires in a quote: 0-7 firmware, its
// configuration, Secure Boot policy and the boot loader (TCG PC Client Platform
// Firmware Profile, section 3.3.4), 8-9 what the boot loader and the Linux EFI stub
// measure (command line, initrd), 11 a UKI's sections (systemd-stub).
func MeasuredPCRs() []int { return []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11} }

// VerifyQuote checks that the answer's quotes are signed by akPublic over nonce and
// cover the measured PCRs of the SHA-256 bank, and that the event log replays to
// those PCRs; it returns what the replayed log says was booted.
func VerifyQuote(akPublic, nonce []byte, a Answer) (Measurements, error) {
	ak, err := attest.ParseAKPublic(akPublic)
	if err != nil {
		return Measurements{}, fmt.Errorf("quote: ak public: %w", err)
	}
	if len(a.Quotes) == 0 {
		return Measurements{}, errors.New("quote: none sent")
	}
	quotes := make([]attest.Quote, len(a.Quotes))
	for i, q := range a.Quotes {
		quotes[i] = attest.Quote{Quote: q.Quote, Signature: q.Signature}
	}
	pcrs := make([]attest.PCR, 0, len(a.PCRs))
	for _, p := range a.PCRs {
		alg := crypto.SHA1
		if p.SHA256 {
			alg = crypto.SHA256
		}
		pcrs = append(pcrs, attest.PCR{Index: p.Index, Digest: p.Digest, DigestAlg: alg})
	}
	// VerifyAll checks each quote's signature, that its extraData is the nonce (so
	// a quote made for another challenge fails) and that every PCR sent is covered
	// by a quote's PCR digest.
	if err := ak.VerifyAll(quotes, pcrs, nonce); err != nil {
		return Measurements{}, fmt.Errorf("quote: %w", err)
	}
	sha256PCRs := slices.DeleteFunc(slices.Clone(pcrs), func(p attest.PCR) bool { return p.DigestAlg != crypto.SHA256 })
	values := map[int][]byte{}
	for _, p := range sha256PCRs {
		if _, dup := values[p.Index]; dup {
			return Measurements{}, fmt.Errorf("quote: pcr %d sent twice", p.Index)
		}
		values[p.Index] = p.Digest
	}
	for _, i := range MeasuredPCRs() {
		if _, ok := values[i]; !ok {
			return Measurements{}, fmt.Errorf("quote: pcr %d (sha256) not quoted", i)
		}
	}
	log, err := ParseEventLog(a.EventLog)
	if err != nil {
		return Measurements{}, err
	}
	events, err := log.Verify(sha256PCRs)
	if err != nil {
		return Measurements{}, fmt.Errorf("event log: does not replay to the quoted PCRs: %w", err)
	}
	// go-attestation accepts a PCR that has no event in the log whatever its value.
	// A measured PCR that moved from its reset value must be explained by events:
	// otherwise a log with that PCR's events left out would pass as "replayed".
	seen := map[int]bool{}
	for _, e := range events {
		seen[e.Index] = true
	}
	for _, i := range MeasuredPCRs() {
		if !seen[i] && !resetValue(values[i]) {
			return Measurements{}, fmt.Errorf("event log: does not replay to the quoted PCRs: pcr %d holds %x but the log has no event for it", i, values[i])
		}
	}
	return extractMeasurements(values, events)
}

// resetValue: a PCR at its power-on value, all zeros (or all ones for PCRs 17-22,
// which Kiln does not use).
func resetValue(d []byte) bool {
	return !slices.ContainsFunc(d, func(b byte) bool { return b != 0 })
}

// MaxEventLogSize bounds the event log Kiln parses. Real logs are tens of KiB (a
// few hundred KiB with many Secure Boot db entries).
const MaxEventLogSize = 4 << 20

// ParseEventLog parses an untrusted TCG event log (crypto-agile, or SHA-1 only).
// Nothing in it is trusted until EventLog.Verify replays it against quoted PCRs.
func ParseEventLog(raw []byte) (*attest.EventLog, error) {
	if len(raw) == 0 {
		return nil, errors.New("event log: empty")
	}
	if len(raw) > MaxEventLogSize {
		return nil, fmt.Errorf("event log: %d bytes, more than the %d Kiln accepts", len(raw), MaxEventLogSize)
	}
	log, err := attest.ParseEventLog(raw)
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	return log, nil
}
