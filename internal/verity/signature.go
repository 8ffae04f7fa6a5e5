package verity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
)

// The root hash's signature is a detached PKCS#7 (CMS, RFC 5652) SignedData over
// the root hash as lower-case hex text without a newline: exactly what the kernel's
// dm-verity verifies when a table names root_hash_sig_key_desc
// (drivers/md/dm-verity-verify-sig.c) and what systemd reads as roothash.p7s. So
// one signature, made once by the operator with
//
//	printf %s "$ROOTHASH" | openssl smime -sign -nocerts -noattr -binary \
//	    -inkey key.pem -signer cert.pem -outform der -out roothash.p7s
//
// is checked by Kiln's agent before it writes a slot and, on kernels that enforce
// it, by the kernel at every boot. The signer must be one of the trusted
// certificates itself (as the kernel's keyring holds keys, not CAs): no chain.

// ErrUnknownSigner: no trusted certificate matches the signature's signer.
var ErrUnknownSigner = errors.New("signed by a key that is not trusted")

var (
	oidSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidSHA256        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
)

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,tag:0"`
}

type signedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	EncapContent     encapContent
	Certificates     asn1.RawValue `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos      []signerInfo  `asn1:"set"`
}

type encapContent struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"optional,explicit,tag:0"`
}

type signerInfo struct {
	Version            int
	SID                asn1.RawValue
	DigestAlgorithm    pkix.AlgorithmIdentifier
	SignedAttrs        asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
	UnsignedAttrs      asn1.RawValue `asn1:"optional,tag:1"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type attribute struct {
	Type   asn1.ObjectIdentifier
	Values asn1.RawValue `asn1:"set"`
}

// VerifyRootHash checks that sig (DER PKCS#7, detached) signs rootHash (as hex
// text) by one of trusted. It returns the signer.
func VerifyRootHash(rootHash []byte, sig []byte, trusted []*x509.Certificate) (*x509.Certificate, error) {
	content := fmt.Appendf(nil, "%x", rootHash)
	return verifyDetached(content, sig, trusted)
}

func verifyDetached(content, der []byte, trusted []*x509.Certificate) (*x509.Certificate, error) {
	if len(trusted) == 0 {
		return nil, errors.New("no trusted certificate to verify the root hash signature with")
	}
	var ci contentInfo
	rest, err := asn1.Unmarshal(der, &ci)
	if err != nil {
		return nil, fmt.Errorf("root hash signature: not DER PKCS#7: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("root hash signature: trailing bytes after the PKCS#7")
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, fmt.Errorf("root hash signature: content type %v, want signedData", ci.ContentType)
	}
	var sd signedData
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		return nil, fmt.Errorf("root hash signature: SignedData: %w", err)
	}
	if !sd.EncapContent.ContentType.Equal(oidData) {
		return nil, fmt.Errorf("root hash signature: encapsulated content type %v, want data", sd.EncapContent.ContentType)
	}
	if len(sd.EncapContent.Content.Bytes) > 0 {
		// An attached signature carries its own content: it must be the root hash.
		var inner []byte
		if _, err := asn1.Unmarshal(sd.EncapContent.Content.Bytes, &inner); err != nil || !bytes.Equal(inner, content) {
			return nil, errors.New("root hash signature: it carries content other than the root hash")
		}
	}
	if len(sd.SignerInfos) == 0 {
		return nil, errors.New("root hash signature: no signer")
	}
	var errs []error
	for i, si := range sd.SignerInfos {
		c, err := verifySigner(content, &si, trusted)
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("signer %d: %w", i, err))
	}
	return nil, fmt.Errorf("root hash signature: %w", errors.Join(errs...))
}

func verifySigner(content []byte, si *signerInfo, trusted []*x509.Certificate) (*x509.Certificate, error) {
	var h crypto.Hash
	switch alg := si.DigestAlgorithm.Algorithm; {
	case alg.Equal(oidSHA256):
		h = crypto.SHA256
	case alg.Equal(oidSHA384):
		h = crypto.SHA384
	case alg.Equal(oidSHA512):
		h = crypto.SHA512
	default:
		return nil, fmt.Errorf("digest algorithm %v is not SHA-256, -384 or -512", alg)
	}
	cert, err := findSigner(si.SID, trusted)
	if err != nil {
		return nil, err
	}
	signed := content
	if len(si.SignedAttrs.FullBytes) > 0 {
		// RFC 5652 5.4: with signed attributes, the signature covers their DER
		// encoding as a SET (tag 0x31), not the [0] IMPLICIT tag they travel under;
		// their messageDigest carries the content's digest.
		if err := checkMessageDigest(si.SignedAttrs.Bytes, content, h); err != nil {
			return nil, err
		}
		signed = bytes.Clone(si.SignedAttrs.FullBytes)
		signed[0] = 0x31
	}
	d := h.New()
	d.Write(signed)
	sum := d.Sum(nil)
	switch pub := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		err = rsa.VerifyPKCS1v15(pub, h, sum, si.Signature)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, sum, si.Signature) {
			err = errors.New("ECDSA verification failed")
		}
	default:
		return nil, fmt.Errorf("signer key %T is not RSA or ECDSA", cert.PublicKey)
	}
	if err != nil {
		return nil, fmt.Errorf("bad signature by %q: %w", cert.Subject.String(), err)
	}
	return cert, nil
}

// findSigner matches a SignerIdentifier (issuer and serial, or [0] subject key
// id) against the trusted certificates.
func findSigner(sid asn1.RawValue, trusted []*x509.Certificate) (*x509.Certificate, error) {
	switch {
	case sid.Class == asn1.ClassUniversal && sid.Tag == asn1.TagSequence:
		var is issuerAndSerial
		if _, err := asn1.Unmarshal(sid.FullBytes, &is); err != nil || is.Serial == nil {
			return nil, fmt.Errorf("signer identifier: %v", err)
		}
		for _, c := range trusted {
			if bytes.Equal(c.RawIssuer, is.Issuer.FullBytes) && c.SerialNumber.Cmp(is.Serial) == 0 {
				return c, nil
			}
		}
		return nil, fmt.Errorf("%w (serial %s)", ErrUnknownSigner, is.Serial)
	case sid.Class == asn1.ClassContextSpecific && sid.Tag == 0:
		for _, c := range trusted {
			if len(c.SubjectKeyId) > 0 && bytes.Equal(c.SubjectKeyId, sid.Bytes) {
				return c, nil
			}
		}
		return nil, fmt.Errorf("%w (subject key id %x)", ErrUnknownSigner, sid.Bytes)
	}
	return nil, errors.New("signer identifier is neither issuer and serial nor a subject key id")
}

func checkMessageDigest(attrs, content []byte, h crypto.Hash) error {
	var got []byte
	for rest := attrs; len(rest) > 0; {
		var a attribute
		var err error
		if rest, err = asn1.Unmarshal(rest, &a); err != nil {
			return fmt.Errorf("signed attributes: %w", err)
		}
		if a.Type.Equal(oidMessageDigest) {
			if got != nil {
				return errors.New("signed attributes: two message digests")
			}
			if _, err := asn1.Unmarshal(a.Values.Bytes, &got); err != nil {
				return fmt.Errorf("signed attributes: message digest: %w", err)
			}
		}
	}
	if got == nil {
		return errors.New("signed attributes without a message digest")
	}
	d := h.New()
	d.Write(content)
	if !bytes.Equal(got, d.Sum(nil)) {
		return errors.New("the signature is over another root hash")
	}
	return nil
}
