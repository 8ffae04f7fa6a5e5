package enroll

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"time"
)

// Machine certificates without the second look. x509.CreateCertificate verifies
// every signature it makes, against a faulty signer; with Kiln's own ECDSA key in
// memory that check costs as much as the signature and the CSR check together (an
// ECDSA verification, ~50 µs). clientSigner builds the to-be-signed part of a
// machine certificate itself, byte for byte as CreateCertificate would (the test
// compares them), and signs it once. Other CA keys (RSA, an HSM-like signer) go
// through CreateCertificate.

// oidSubjectAltName is id-ce-subjectAltName.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// clientSigner issues machine certificates for one CA.
type clientSigner struct {
	key    *ecdsa.PrivateKey
	issuer []byte // the CA's RawSubject
	sigAlg pkix.AlgorithmIdentifier
	// exts are the extensions of a machine certificate as CreateCertificate orders
	// and encodes them; the SAN (index san) is replaced per name.
	exts []pkix.Extension
	san  int
}

// tbsCertificate is RFC 5280's TBSCertificate, as crypto/x509 marshals it.
type tbsCertificate struct {
	Version            int `asn1:"optional,explicit,default:0,tag:0"`
	SerialNumber       *big.Int
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Issuer             asn1.RawValue
	Validity           struct{ NotBefore, NotAfter time.Time }
	Subject            asn1.RawValue
	PublicKey          asn1.RawValue
	Extensions         []pkix.Extension `asn1:"omitempty,optional,explicit,tag:3"`
}

type certificate struct {
	TBS                asn1.RawValue
	SignatureAlgorithm pkix.AlgorithmIdentifier
	SignatureValue     asn1.BitString
}

// newClientSigner returns nil when the CA key is not an in-memory P-256 key: then
// CreateCertificate signs.
func newClientSigner(a *authority) *clientSigner {
	key, ok := a.key.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil
	}
	// A reference certificate gives the extensions in CreateCertificate's encoding.
	ref, err := x509.CreateCertificate(rand.Reader, a.clientTemplate("reference", key.Public(), time.Now(), time.Now().Add(time.Hour)), a.cert, key.Public(), key)
	if err != nil {
		return nil
	}
	var c struct {
		TBS                tbsCertificate
		SignatureAlgorithm pkix.AlgorithmIdentifier
		SignatureValue     asn1.BitString
	}
	if rest, err := asn1.Unmarshal(ref, &c); err != nil || len(rest) > 0 {
		return nil
	}
	s := &clientSigner{key: key, issuer: a.cert.RawSubject, sigAlg: c.TBS.SignatureAlgorithm, exts: c.TBS.Extensions, san: -1}
	for i, e := range s.exts {
		if e.Id.Equal(oidSubjectAltName) {
			s.san = i
		}
	}
	if s.san < 0 || !s.sigAlg.Algorithm.Equal(asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}) {
		return nil
	}
	return s
}

// issue signs a machine certificate for tmpl (from clientTemplate). ok is false when
// tmpl is outside what this signer encodes (a time CreateCertificate would write as
// GeneralizedTime, a name that is not a PrintableString); the caller then uses
// CreateCertificate.
func (s *clientSigner) issue(tmpl *x509.Certificate, pub crypto.PublicKey) (der []byte, ok bool, err error) {
	name := tmpl.Subject.CommonName
	if len(tmpl.DNSNames) != 1 || tmpl.DNSNames[0] != name || !printable(name) ||
		tmpl.NotBefore.UTC().Year() >= 2050 || tmpl.NotAfter.UTC().Year() >= 2050 ||
		tmpl.NotBefore.UTC().Year() < 1950 {
		return nil, false, nil
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, false, err
	}
	subject, err := asn1.Marshal(pkix.Name{CommonName: name}.ToRDNSequence())
	if err != nil {
		return nil, false, err
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(name)}})
	if err != nil {
		return nil, false, err
	}
	exts := append([]pkix.Extension(nil), s.exts...)
	exts[s.san].Value = san
	tbs := tbsCertificate{
		Version: 2, SerialNumber: tmpl.SerialNumber, SignatureAlgorithm: s.sigAlg,
		Issuer: asn1.RawValue{FullBytes: s.issuer}, Subject: asn1.RawValue{FullBytes: subject}, PublicKey: asn1.RawValue{FullBytes: spki},
		Extensions: exts,
	}
	// Whole seconds, UTC, as CreateCertificate writes them.
	tbs.Validity.NotBefore, tbs.Validity.NotAfter = tmpl.NotBefore.UTC().Truncate(time.Second), tmpl.NotAfter.UTC().Truncate(time.Second)
	raw, err := asn1.Marshal(tbs)
	if err != nil {
		return nil, false, err
	}
	digest := sha256.Sum256(raw)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, digest[:])
	if err != nil {
		return nil, false, err
	}
	der, err = asn1.Marshal(certificate{TBS: asn1.RawValue{FullBytes: raw}, SignatureAlgorithm: s.sigAlg, SignatureValue: asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		return nil, false, err
	}
	return der, true, nil
}

// printable is asn1's PrintableString alphabet (what encoding/asn1 picks for such a
// string; a name outside it would be a UTF8String).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case bytes.IndexByte([]byte(" '()+,-./:=?"), c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}
