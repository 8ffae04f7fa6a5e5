package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/kilnhq/kiln/internal/testkit"
)

// measurement is one event a test "firmware" measures: extended into the real
// swtpm and written to the event log, as OVMF and the Linux EFI stub do.
type measurement struct {
	pcr  int
	typ  uint32
	data []byte
}

// bootOf is a plausible UEFI boot: CRTM version in PCR 0, separators in 0-7,
// Secure Boot variables left out (PCR 7 gets only its separator), the boot
// loader and the kernel in PCR 4, the initrd in PCR 9 tagged as the Linux EFI
// stub does.
func bootOf(kernel, initrd string) []measurement {
	var ms []measurement
	ms = append(ms, measurement{0, uint32(evSCRTMVersion), []byte("OVMF\x00")})
	for pcr := range 8 {
		ms = append(ms, measurement{pcr, 0x4, []byte{0, 0, 0, 0}}) // EV_SEPARATOR
	}
	ms = append(ms,
		measurement{4, uint32(evEFIBootServicesApplication), []byte("ipxe.efi")},
		measurement{4, uint32(evEFIBootServicesApplication), []byte(kernel)},
		measurement{9, uint32(evEventTag), taggedEvent(linuxInitrdTagID, []byte(initrd))},
	)
	return ms
}

func taggedEvent(id uint32, data []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, id)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// eventLog writes a crypto-agile TCG event log (SHA-256 only) for ms, each event's
// digest the sha256 of its data, and returns it with the digests.
func eventLog(ms []measurement) ([]byte, [][32]byte) {
	var b bytes.Buffer
	le := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	// First event: TCG_PCR_EVENT (SHA-1 format) holding TCG_EfiSpecIDEvent.
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	binary.Write(&spec, binary.LittleEndian, struct {
		PlatformClass              uint32
		Minor, Major, Errata, Uint uint8
		NumAlgs                    uint32
		Alg, Size                  uint16
		VendorInfoSize             uint8
	}{0, 0, 2, 0, 2, 1, 0x000B, 32, 0})
	le(uint32(0))
	le(uint32(0x3)) // EV_NO_ACTION
	b.Write(make([]byte, 20))
	le(uint32(spec.Len()))
	b.Write(spec.Bytes())
	var digests [][32]byte
	for _, m := range ms {
		d := sha256.Sum256(m.data)
		digests = append(digests, d)
		le(uint32(m.pcr))
		le(m.typ)
		le(uint32(1))
		le(uint16(0x000B))
		b.Write(d[:])
		le(uint32(len(m.data)))
		b.Write(m.data)
	}
	return b.Bytes(), digests
}

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
func bootTPM(t testing.TB, state string, boot []measurement, withAK bool) *machineTPM {
	t.Helper()
	sw := testkit.StartSWTPM(t, state)
	conn := sw.Dial(t)
	log, digests := eventLog(boot)
	for i, m := range boot {
		if err := tpm2.PCRExtend(conn, tpmutil.Handle(m.pcr), tpm2.AlgSHA256, digests[i][:], ""); err != nil {
			t.Fatalf("extend pcr %d: %v", m.pcr, err)
		}
	}
	conn.EventLog = log
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
