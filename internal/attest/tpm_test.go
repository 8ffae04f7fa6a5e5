package attest

import (
	"crypto/x509"
	"testing"

	"github.com/google/go-attestation/attest"

	"github.com/kilnhq/kiln/internal/testkit"
)

// machineTPM is the machine's side, done with go-attestation against a real swtpm:
// what Kiln's agent does on a real machine.
type machineTPM struct {
	conn  *testkit.TPMConn
	tpm   *attest.TPM
	ek    attest.EK
	ak    *attest.AK
	ekPub []byte
}

// bootTPM starts swtpm on state, measures boot into it and opens it; withAK
// creates an attestation key too (seconds of RSA key generation in swtpm).
func bootTPM(t testing.TB, state string, boot []testkit.TPMEvent, withAK bool) *machineTPM {
	t.Helper()
	sw := testkit.StartSWTPM(t, state)
	conn := sw.Dial(t)
	conn.Measure(t, boot)
	tpm, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: conn})
	if err != nil {
		t.Fatalf("open swtpm: %v", err)
	}
	eks, err := tpm.EKs()
	if err != nil || len(eks) == 0 {
		t.Fatalf("read EK: %v (%d)", err, len(eks))
	}
	var ak *attest.AK
	if withAK {
		if ak, err = tpm.NewAK(nil); err != nil {
			t.Fatalf("create AK: %v", err)
		}
	}
	pub, err := x509.MarshalPKIXPublicKey(eks[0].Public)
	if err != nil {
		t.Fatal(err)
	}
	return &machineTPM{conn: conn, tpm: tpm, ek: eks[0], ak: ak, ekPub: pub}
}

func (m *machineTPM) ekCertDER() []byte {
	if m.ek.Certificate == nil {
		return nil
	}
	return m.ek.Certificate.Raw
}

func (m *machineTPM) parsedEK(t testing.TB) EK {
	t.Helper()
	ek, err := ParseEK(m.ekPub, m.ekCertDER())
	if err != nil {
		t.Fatalf("ParseEK: %v", err)
	}
	return ek
}

func (m *machineTPM) akParams() AKParams {
	p := m.ak.AttestationParameters()
	return AKParams{Public: p.Public, CreateData: p.CreateData, CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature}
}

// activate is ActivateCredential on the TPM; an error means this TPM cannot
// decrypt the credential (another EK, or another AK name).
func (m *machineTPM) activate(ch Challenge) ([]byte, error) {
	return m.ak.ActivateCredential(m.tpm, attest.EncryptedCredential{Credential: ch.Credential, Secret: ch.Secret})
}

// quote quotes every PCR bank over nonce and attaches the event log.
func (m *machineTPM) quote(t testing.TB, nonce []byte) Answer {
	t.Helper()
	pp, err := m.tpm.AttestPlatform(m.ak, nonce, &attest.PlatformAttestConfig{EventLog: m.conn.EventLog})
	if err != nil {
		t.Fatalf("quote: %v", err)
	}
	var a Answer
	for _, q := range pp.Quotes {
		a.Quotes = append(a.Quotes, Quote{Quote: q.Quote, Signature: q.Signature})
	}
	for _, p := range pp.PCRs {
		a.PCRs = append(a.PCRs, PCR{Index: p.Index, SHA256: p.DigestAlg.Size() == 32, Digest: p.Digest})
	}
	a.EventLog = pp.EventLog
	return a
}

// answer is the honest machine's full answer to an activation challenge.
func (m *machineTPM) answer(t testing.TB, ch Challenge) Answer {
	t.Helper()
	secret, err := m.activate(ch)
	if err != nil {
		t.Fatalf("activate credential: %v", err)
	}
	a := m.quote(t, ch.Nonce)
	a.ActivatedSecret = secret
	return a
}
