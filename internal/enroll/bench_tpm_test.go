package enroll

import (
	"crypto/x509"
	"testing"

	"github.com/google/go-attestation/attest"

	kattest "github.com/kilnhq/kiln/internal/attest"
	"github.com/kilnhq/kiln/internal/testkit"
)

// BenchmarkEnrollTPMAttestation measures what TPM attestation adds to Kiln's side of
// an enrollment, per enrollment: checking the AK's creation and making its
// credential for the EK (TPM2_MakeCredential: RSA-OAEP to the EK), using up the
// challenge, and verifying a quote (AK signature over the nonce and PCR digest)
// with its event log replayed and measurements extracted. The agent's answers are
// recorded once from a real swtpm before the clock starts (the TPM's own work is
// the machine's, not Kiln's). Run it with BenchmarkEnroll (the plain-token path) in
// the same command; a TPM enrollment costs Kiln about the sum, plus two more
// requests (evidence, challenge) that do no store write.
func BenchmarkEnrollTPMAttestation(b *testing.B) {
	vendor := testkit.NewSWTPMCA(b)
	conn := testkit.StartSWTPM(b, vendor.Manufacture(b)).Dial(b)
	conn.Measure(b, testkit.UEFIBoot("vmlinuz", "agent-initrd"))
	tpm, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: conn})
	if err != nil {
		b.Fatal(err)
	}
	eks, err := tpm.EKs()
	if err != nil {
		b.Fatal(err)
	}
	ekDER, _ := x509.MarshalPKIXPublicKey(eks[0].Public)
	ek, err := kattest.ParseEK(ekDER, eks[0].Certificate.Raw)
	if err != nil {
		b.Fatal(err)
	}
	ak, err := tpm.NewAK(nil)
	if err != nil {
		b.Fatal(err)
	}
	p := ak.AttestationParameters()
	akp := kattest.AKParams{Public: p.Public, CreateData: p.CreateData, CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature}
	nonce := make([]byte, 32)
	pp, err := tpm.AttestPlatform(ak, nonce, nil)
	if err != nil {
		b.Fatal(err)
	}
	var ans kattest.Answer
	for _, q := range pp.Quotes {
		ans.Quotes = append(ans.Quotes, kattest.Quote{Quote: q.Quote, Signature: q.Signature})
	}
	for _, r := range pp.PCRs {
		ans.PCRs = append(ans.PCRs, kattest.PCR{Index: r.Index, SHA256: r.DigestAlg.Size() == 32, Digest: r.Digest})
	}
	ans.EventLog = pp.EventLog
	if _, err := kattest.VerifyQuote(p.Public, nonce, ans); err != nil {
		b.Fatalf("the recorded answer does not verify: %v", err)
	}
	roots, err := kattest.LoadEKRoots(vendor.RootsDir(b))
	if err != nil {
		b.Fatal(err)
	}
	ch := kattest.NewChallenges(0, 0, nil)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := kattest.CheckEK(ek, ek.SHA256, roots); err != nil {
				b.Error(err)
				return
			}
			c, err := ch.Activation("bench", ek, akp)
			if err != nil {
				b.Error(err)
				return
			}
			// The challenge is used up (the recorded answer is for another nonce, so
			// its quote is verified below against the nonce it was made for).
			if _, err := ch.Verify(c.ID, "bench", kattest.Answer{}); err == nil {
				b.Error("an empty answer verified")
				return
			}
			if _, err := kattest.VerifyQuote(p.Public, nonce, ans); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Minutes(), "attest/min")
}
