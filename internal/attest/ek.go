package attest

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-attestation/attest"
)

// EK is a machine's endorsement key as the agent reported it: its public key and,
// where the TPM holds one, its certificate.
type EK struct {
	Public      crypto.PublicKey
	Certificate *x509.Certificate // nil: the TPM holds no EK certificate
	// SHA256 is the pin: the hex sha256 of the public key's PKIX DER encoding.
	SHA256 string
}

// ParseEK reads the EK the agent sent: publicDER is its PKIX DER public key,
// certDER its certificate (empty when the TPM has none). A certificate whose key is
// not the EK's is refused: a machine could otherwise present another TPM's
// certificate beside its own key.
func ParseEK(publicDER, certDER []byte) (EK, error) {
	if len(publicDER) == 0 {
		return EK{}, errors.New("ek.public: empty")
	}
	pub, err := x509.ParsePKIXPublicKey(publicDER)
	if err != nil {
		return EK{}, fmt.Errorf("ek.public: %w", err)
	}
	ek := EK{Public: pub, SHA256: EKFingerprint(publicDER)}
	if len(certDER) == 0 {
		return ek, nil
	}
	// ParseEKCertificate copes with the encodings TPM vendors get wrong (padding
	// after the DER, critical extensions Go does not know).
	cert, err := attest.ParseEKCertificate(certDER)
	if err != nil {
		return EK{}, fmt.Errorf("ek.certificate: %w", err)
	}
	certPub, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		return EK{}, fmt.Errorf("ek.certificate: public key: %w", err)
	}
	if !bytes.Equal(certPub, publicDER) {
		return EK{}, errors.New("ek.certificate: certifies another key than ek.public")
	}
	ek.Certificate = cert
	return ek, nil
}

// EKFingerprint is the pin of an EK: hex sha256 of its PKIX DER public key, the
// value of spec.tpm.ekSHA256.
func EKFingerprint(publicDER []byte) string {
	sum := sha256.Sum256(publicDER)
	return hex.EncodeToString(sum[:])
}

// NormalizeEKPin checks an operator-written pin (64 hex digits, colons allowed)
// and returns it lower case without separators.
func NormalizeEKPin(pin string) (string, error) {
	p := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(pin), ":", ""))
	if len(p) != sha256.Size*2 {
		return "", fmt.Errorf("%q is not a sha256 (64 hex digits)", pin)
	}
	if _, err := hex.DecodeString(p); err != nil {
		return "", fmt.Errorf("%q is not a sha256 (64 hex digits)", pin)
	}
	return p, nil
}

// EKRoots are the TPM vendors' certificates an EK certificate must chain to.
type EKRoots struct {
	roots         *x509.CertPool
	intermediates *x509.CertPool
	count         int
}

// LoadEKRoots reads every PEM certificate in dir (files ending .pem, .crt or .cer):
// self-signed ones are roots, the others intermediates (vendors publish both, and an
// operator should not have to sort them). A folder without any certificate is an
// error: an empty trust store would refuse every TPM, which is never what the
// operator meant by naming it.
func LoadEKRoots(dir string) (*EKRoots, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read TPM EK roots %s: %w", dir, err)
	}
	r := &EKRoots{roots: x509.NewCertPool(), intermediates: x509.NewCertPool()}
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || !slices.Contains([]string{".pem", ".crt", ".cer"}, ext) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read TPM EK root %s: %w", path, err)
		}
		certs, err := parsePEMCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("read TPM EK root %s: %w", path, err)
		}
		for _, c := range certs {
			if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
				r.roots.AddCert(c)
			} else {
				r.intermediates.AddCert(c)
			}
			r.count++
		}
	}
	if r.count == 0 {
		return nil, fmt.Errorf("read TPM EK roots %s: no PEM certificate in the folder", dir)
	}
	return r, nil
}

// Count is how many certificates were loaded.
func (r *EKRoots) Count() int { return r.count }

func parsePEMCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// Verify checks that ek's certificate chains to a vendor root. An EK without a
// certificate fails: with roots configured, the operator asked for vendor-rooted
// TPMs only.
func (r *EKRoots) Verify(ek EK) error {
	if ek.Certificate == nil {
		return errors.New("ek.certificate: missing, and TPM EK roots are configured")
	}
	// A copy: the caller's certificate stays as parsed.
	c := *ek.Certificate
	// EK certificates carry the TCG's EK-certificate usage (2.23.133.8.1), not a
	// TLS one; their subject alternative name (TPM manufacturer, model, version)
	// is a directoryName Go does not check, and some vendors mark it critical.
	subjectAltName := asn1.ObjectIdentifier{2, 5, 29, 17}
	c.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(c.UnhandledCriticalExtensions), func(oid asn1.ObjectIdentifier) bool {
		return oid.Equal(subjectAltName)
	})
	_, err := c.Verify(x509.VerifyOptions{
		Roots:         r.roots,
		Intermediates: r.intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("ek.certificate: not issued by a configured TPM vendor root: %w", err)
	}
	return nil
}

// ErrEKMismatch: the machine's EK is not the one pinned for it, i.e. another TPM
// (another machine, or a spoofer) speaks for it.
var ErrEKMismatch = errors.New("ek: not the EK pinned for this machine")

// CheckEK is the EK admission rule: with a pin, the EK must be the pinned one; with
// roots, its certificate must chain to one of them. Both apply when both are set.
func CheckEK(ek EK, pin string, roots *EKRoots) error {
	if pin != "" {
		want, err := NormalizeEKPin(pin)
		if err != nil {
			return fmt.Errorf("ek pin: %w", err)
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(ek.SHA256)) != 1 {
			return fmt.Errorf("%w (pinned %s, presented %s)", ErrEKMismatch, want, ek.SHA256)
		}
	}
	if roots != nil {
		return roots.Verify(ek)
	}
	return nil
}
