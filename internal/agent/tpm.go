package agent

import (
	"crypto/x509"
	"fmt"

	"github.com/google/go-attestation/attest"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// The machine's side of TPM-bound enrollment (agentwire/tpm.go): read the EK and
// its certificate, make an attestation key, activate Kiln's credential, quote.
//
// The machine's TLS key stays a software key in the agent's memory (the agent
// runs from RAM and keeps nothing across boots). A TPM-resident TLS key would need
// a crypto.Signer over the TPM for every TLS handshake (go-attestation's keys sign
// only digests it is given, and the agent's transports and CSRs would have to
// route through it); what binds the certificate to this TPM instead is that Kiln
// issues it only after credential activation on the pinned EK and a fresh quote
// (the CSR's key is bound to the challenge), and that each renewal re-quotes with
// the same AK: a copied key gets at most the certificate's remaining lifetime, and
// secrets released with attestedWithin need a quote younger than that.

// tpmSession is an open TPM with the AK made for this enrollment.
type tpmSession struct {
	tpm   *attest.TPM
	ek    attest.EK
	ekPub []byte
	ak    *attest.AK
}

func openTPMSession(open func() (*attest.TPM, error)) (*tpmSession, error) {
	if open == nil {
		open = func() (*attest.TPM, error) { return attest.OpenTPM(nil) }
	}
	tpm, err := open()
	if err != nil {
		return nil, fmt.Errorf("open TPM: %w", err)
	}
	s := &tpmSession{tpm: tpm}
	eks, err := tpm.EKs()
	if err != nil || len(eks) == 0 {
		tpm.Close()
		return nil, fmt.Errorf("read the TPM's endorsement key: %w (%d found)", err, len(eks))
	}
	s.ek = eks[0]
	if s.ekPub, err = x509.MarshalPKIXPublicKey(s.ek.Public); err != nil {
		tpm.Close()
		return nil, fmt.Errorf("encode the TPM's endorsement key: %w", err)
	}
	if s.ak, err = tpm.NewAK(nil); err != nil {
		tpm.Close()
		return nil, fmt.Errorf("create an attestation key in the TPM: %w", err)
	}
	return s, nil
}

// evidence is what the agent tells Kiln of its TPM.
func (s *tpmSession) evidence() *agentwire.TPMEnrollment {
	p := s.ak.AttestationParameters()
	ev := &agentwire.TPMEnrollment{EKPublic: s.ekPub,
		AK: agentwire.TPMAK{Public: p.Public, CreateData: p.CreateData, CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature}}
	if s.ek.Certificate != nil {
		ev.EKCertificate = s.ek.Certificate.Raw
	}
	return ev
}

// answer activates the challenge's credential (activate: an enrollment) and quotes
// every PCR bank over its nonce, with the firmware's event log.
func (s *tpmSession) answer(ch *agentwire.TPMChallenge, activate bool) (*agentwire.TPMAnswer, error) {
	ans := &agentwire.TPMAnswer{ChallengeID: ch.ID}
	if activate {
		secret, err := s.ak.ActivateCredential(s.tpm, attest.EncryptedCredential{Credential: ch.Credential, Secret: ch.Secret})
		if err != nil {
			return nil, fmt.Errorf("activate Kiln's TPM credential: %w", err)
		}
		ans.ActivatedSecret = secret
	}
	pp, err := s.tpm.AttestPlatform(s.ak, ch.Nonce, nil)
	if err != nil {
		return nil, fmt.Errorf("quote the TPM's PCRs: %w", err)
	}
	for _, q := range pp.Quotes {
		ans.Quotes = append(ans.Quotes, agentwire.TPMQuote{Quote: q.Quote, Signature: q.Signature})
	}
	for _, p := range pp.PCRs {
		alg := "sha1"
		if p.DigestAlg.Size() == 32 {
			alg = "sha256"
		}
		ans.PCRs = append(ans.PCRs, agentwire.TPMPCR{Index: p.Index, Alg: alg, Digest: p.Digest})
	}
	ans.EventLog = pp.EventLog
	return ans, nil
}

// Close frees the AK and closes the TPM.
func (s *tpmSession) Close() {
	if s.ak != nil {
		s.ak.Close(s.tpm)
	}
	s.tpm.Close()
}
