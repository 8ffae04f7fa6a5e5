package enroll

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// What the CA signs for machines: client certificates and the CRL.

// randomSerial is a positive 127-bit serial number (RFC 5280 4.1.2.2: at most 20 octets,
// unpredictable per CA/B Forum practice).
func randomSerial() *big.Int {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[0] &= 0x7f
	b[0] |= 0x01 // never zero, never a short encoding
	return new(big.Int).SetBytes(b[:])
}

// clientTemplate is a machine certificate: CN and one DNS SAN, both the machine's name,
// client authentication only (so a machine certificate can never pose as the server).
func (a *authority) clientTemplate(name string, pub crypto.PublicKey, notBefore, notAfter time.Time) *x509.Certificate {
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	ku := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	return &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
}

func (a *authority) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// issued is a signed machine certificate.
type issued struct {
	name        string
	der         []byte
	serial      string // hex
	fingerprint string
	notBefore   time.Time
	notAfter    time.Time
	keyHash     string // SHA-256 of the certified SubjectPublicKeyInfo, hex
}

// issueClient signs a machine certificate for pub, valid from five minutes before now
// (clock skew) for ttl.
func (a *authority) issueClient(name string, pub crypto.PublicKey, now time.Time, ttl time.Duration) (*issued, error) {
	tmpl := a.clientTemplate(name, pub, now.Add(-5*time.Minute), now.Add(ttl))
	var der []byte
	ok := false
	var err error
	if a.fast != nil {
		der, ok, err = a.fast.issue(tmpl, pub)
	}
	if err == nil && !ok {
		der, err = x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	}
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", name, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", name, err)
	}
	kh := sha256.Sum256(spki)
	return &issued{name: name, der: der, serial: hex.EncodeToString(tmpl.SerialNumber.Bytes()), fingerprint: Fingerprint(der),
		notBefore: tmpl.NotBefore.UTC(), notAfter: tmpl.NotAfter.UTC(), keyHash: hex.EncodeToString(kh[:])}, nil
}

// verifyClient checks that a presented client certificate was issued by this CA for
// client authentication and is valid at now.
func (a *authority) verifyClient(c *x509.Certificate, now time.Time) error {
	_, err := c.Verify(x509.VerifyOptions{Roots: a.pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// crl signs a certificate revocation list.
func (a *authority) crl(entries []x509.RevocationListEntry, now time.Time, next time.Duration) ([]byte, error) {
	// crypto/x509 signs a CRL only with an issuer whose key usage has cRLSign (an
	// absent key usage extension included): say why in Kiln's words.
	if a.cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, errors.New("the CA certificate has no cRLSign key usage: it cannot sign a CRL")
	}
	tmpl := &x509.RevocationList{
		RevokedCertificateEntries: entries,
		// Time-based numbers grow monotonically across restarts and replicas.
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now,
		NextUpdate: now.Add(next),
	}
	return x509.CreateRevocationList(rand.Reader, tmpl, a.cert, a.key)
}
