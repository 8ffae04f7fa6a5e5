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

// clientSigner issues machine certificates for one CA.
type clientSigner struct {
	key    *ecdsa.PrivateKey
	issuer []byte // the CA's RawSubject
	sigAlg []byte // DER AlgorithmIdentifier
	// exts are the DER extensions of a machine certificate as CreateCertificate
	// orders and encodes them; the SAN (index san) is made per name.
	exts [][]byte
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
	if !c.TBS.SignatureAlgorithm.Algorithm.Equal(asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}) {
		return nil
	}
	s := &clientSigner{key: key, issuer: a.cert.RawSubject, san: -1}
	if s.sigAlg, err = asn1.Marshal(c.TBS.SignatureAlgorithm); err != nil {
		return nil
	}
	for i, e := range c.TBS.Extensions {
		if e.Id.Equal(oidSAN) {
			if e.Critical {
				return nil
			}
			s.san = i
		}
		der, err := asn1.Marshal(e)
		if err != nil {
			return nil
		}
		s.exts = append(s.exts, der)
	}
	if s.san < 0 {
		return nil
	}
	return s
}

// DER tags used below.
const (
	tagInteger         = 0x02
	tagBitString       = 0x03
	tagOctetString     = 0x04
	tagPrintableString = 0x13
	tagUTCTime         = 0x17
	tagSequence        = 0x30
	tagSet             = 0x31
)

// oidCommonName and oidSANExt are the DER of id-at-commonName and id-ce-subjectAltName.
var (
	oidCommonNameDER = []byte{0x06, 0x03, 0x55, 0x04, 0x03}
	oidSANExtDER     = []byte{0x06, 0x03, 0x55, 0x1d, 0x11}
)

// tlv is a DER element: tag, definite length, the contents.
func tlv(tag byte, contents ...[]byte) []byte {
	n := 0
	for _, c := range contents {
		n += len(c)
	}
	out := make([]byte, 0, n+6)
	out = append(out, tag)
	switch {
	case n < 0x80:
		out = append(out, byte(n))
	case n < 0x100:
		out = append(out, 0x81, byte(n))
	case n < 0x10000:
		out = append(out, 0x82, byte(n>>8), byte(n))
	default:
		out = append(out, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	for _, c := range contents {
		out = append(out, c...)
	}
	return out
}

// derInteger is a positive integer's DER contents (a leading zero when its top bit is set).
func derInteger(v *big.Int) []byte {
	b := v.Bytes()
	if len(b) == 0 || b[0]&0x80 != 0 {
		b = append([]byte{0}, b...)
	}
	return b
}

func utcTime(t time.Time) []byte {
	return []byte(t.UTC().Format("060102150405Z"))
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
	subject := tlv(tagSequence, tlv(tagSet, tlv(tagSequence, oidCommonNameDER, tlv(tagPrintableString, []byte(name)))))
	exts := make([][]byte, len(s.exts))
	copy(exts, s.exts)
	exts[s.san] = tlv(tagSequence, oidSANExtDER, tlv(tagOctetString, tlv(tagSequence, tlv(0x82, []byte(name)))))
	raw := tlv(tagSequence,
		[]byte{0xa0, 0x03, tagInteger, 0x01, 0x02}, // [0] version v3
		tlv(tagInteger, derInteger(tmpl.SerialNumber)),
		s.sigAlg, s.issuer,
		tlv(tagSequence, tlv(tagUTCTime, utcTime(tmpl.NotBefore)), tlv(tagUTCTime, utcTime(tmpl.NotAfter))),
		subject, spki,
		tlv(0xa3, tlv(tagSequence, exts...)), // [3] extensions
	)
	digest := sha256.Sum256(raw)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, digest[:])
	if err != nil {
		return nil, false, err
	}
	return tlv(tagSequence, raw, s.sigAlg, tlv(tagBitString, []byte{0}, sig)), true, nil
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
