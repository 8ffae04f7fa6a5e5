package image

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
)

// Authenticode signing of PE/COFF images (a UKI) for UEFI Secure Boot, done here in
// Go rather than by calling sbsign: sbsign (sbsigntool 0.9) puts a signingTime
// attribute into every signature, so two signings of the same image differ and the
// agent UKI would not be reproducible. This signer writes only the attributes the
// firmware needs (contentType, messageDigest, an empty SpcSpOpusInfo) and RSA
// PKCS#1 v1.5 is deterministic: the same image, key and certificate give the same
// bytes. sbverify (the same sbsigntool) checks the result in the tests, and OVMF's
// Secure Boot boots it in the e2e tests.

// peLayout is what Authenticode needs of a PE/COFF image: where the fields it skips
// are and where the section data lies.
type peLayout struct {
	checksumOff int // OptionalHeader.CheckSum
	certDirOff  int // the Certificate Table data directory entry (8 bytes)
	headersEnd  int // OptionalHeader.SizeOfHeaders
	sections    []peRange
	certOff     int // the existing certificate table, if any
	certSize    int
}

type peRange struct{ off, size int }

// parsePE reads the layout of a PE/COFF image, checking every offset against the
// file: images come from operators' files and must never make the signer read out
// of bounds.
func parsePE(b []byte) (*peLayout, error) {
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return nil, errors.New("not a PE/COFF image (no MZ header)")
	}
	pe := int(binary.LittleEndian.Uint32(b[0x3c:]))
	if pe < 0x40 || pe > len(b)-24 || !bytes.Equal(b[pe:pe+4], []byte("PE\x00\x00")) {
		return nil, errors.New("not a PE/COFF image (no PE signature)")
	}
	coff := pe + 4
	nsec := int(binary.LittleEndian.Uint16(b[coff+2:]))
	optSize := int(binary.LittleEndian.Uint16(b[coff+16:]))
	opt := coff + 20
	if opt+optSize > len(b) || optSize < 2 {
		return nil, errors.New("PE optional header is truncated")
	}
	var dirs int // offset of the data directories in the optional header
	switch binary.LittleEndian.Uint16(b[opt:]) {
	case 0x10b: // PE32
		dirs = 96
	case 0x20b: // PE32+
		dirs = 112
	default:
		return nil, errors.New("PE optional header magic is neither PE32 nor PE32+")
	}
	if optSize < dirs+5*8 || binary.LittleEndian.Uint32(b[opt+dirs-4:]) < 5 {
		return nil, errors.New("PE optional header has no certificate table directory")
	}
	l := &peLayout{
		checksumOff: opt + 64,
		certDirOff:  opt + dirs + 4*8,
		headersEnd:  int(binary.LittleEndian.Uint32(b[opt+60:])),
	}
	secTable := opt + optSize
	if nsec > 96 || secTable+nsec*40 > len(b) {
		return nil, fmt.Errorf("PE section table (%d sections) is truncated", nsec)
	}
	if l.headersEnd < secTable+nsec*40 || l.headersEnd > len(b) {
		return nil, fmt.Errorf("PE SizeOfHeaders %d is outside the file", l.headersEnd)
	}
	for i := range nsec {
		s := secTable + i*40
		size := int64(binary.LittleEndian.Uint32(b[s+16:]))
		off := int64(binary.LittleEndian.Uint32(b[s+20:]))
		if size == 0 {
			continue
		}
		if off < int64(l.headersEnd) || off+size > int64(len(b)) {
			return nil, fmt.Errorf("PE section %d: raw data %d+%d is outside the file", i, off, size)
		}
		l.sections = append(l.sections, peRange{int(off), int(size)})
	}
	slices.SortFunc(l.sections, func(a, b peRange) int { return a.off - b.off })
	certOff := int64(binary.LittleEndian.Uint32(b[l.certDirOff:]))
	certSize := int64(binary.LittleEndian.Uint32(b[l.certDirOff+4:]))
	if certSize != 0 {
		if certOff < int64(l.headersEnd) || certOff+certSize != int64(len(b)) {
			return nil, fmt.Errorf("PE certificate table %d+%d does not end the file", certOff, certSize)
		}
		l.certOff, l.certSize = int(certOff), int(certSize)
	}
	return l, nil
}

// authenticodeDigest is the image's Authenticode SHA-256, computed as UEFI firmware
// does (EDK2's DxeImageVerificationLib): the headers without the checksum and the
// certificate table entry, the sections in file order, then whatever follows the
// bytes hashed so far up to the certificate table. The last step counts bytes, not
// offsets (as EDK2 and sbsigntool do), which matters for images with gaps between
// sections, such as objcopy's UKIs.
func authenticodeDigest(b []byte, l *peLayout) []byte {
	h := sha256.New()
	h.Write(b[:l.checksumOff])
	h.Write(b[l.checksumOff+4 : l.certDirOff])
	h.Write(b[l.certDirOff+8 : l.headersEnd])
	hashed := l.headersEnd
	for _, s := range l.sections {
		h.Write(b[s.off : s.off+s.size])
		hashed += s.size
	}
	end := len(b) - l.certSize
	if hashed < end {
		h.Write(b[hashed:end])
	}
	return h.Sum(nil)
}

// OIDs of PKCS#7 and Authenticode.
var (
	oidSignedData        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidSpcIndirectData   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 1, 4}
	oidSpcPEImageData    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 1, 15}
	oidSpcSpOpusInfo     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 1, 12}
	oidContentType       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidMessageDigest     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidSHA256            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidRSAEncryption     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	derNull              = []byte{0x05, 0x00}
	spcPEImageDataLegacy = []byte{
		// SpcPeImageData { flags BIT STRING {}, file [0] SpcLink { file [2] SpcString
		// { unicode [0] "<<<Obsolete>>>" } } }: the fixed value every signer writes.
		0x03, 0x01, 0x00, 0xa0, 0x20, 0xa2, 0x1e, 0x80, 0x1c,
		0, '<', 0, '<', 0, '<', 0, 'O', 0, 'b', 0, 's', 0, 'o', 0, 'l', 0, 'e', 0, 't', 0, 'e', 0, '>', 0, '>', 0, '>',
	}
)

// derTLV encodes one DER element with the given tag around the concatenated parts.
func derTLV(tag byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := []byte{tag}
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
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func derOID(o asn1.ObjectIdentifier) []byte {
	b, _ := asn1.Marshal(o) // a constant, valid OID
	return b
}

const (
	tagSequence = 0x30
	tagSet      = 0x31
	tagOctets   = 0x04
	tagInteger  = 0x02
	tagCtx0     = 0xa0
)

// SecureBootSigner signs PE images with an operator's Secure Boot db key.
type SecureBootSigner struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

// LoadSecureBootSigner reads a PEM RSA private key (PKCS#1 or PKCS#8, unencrypted)
// and its PEM certificate. Errors name the files, never their content.
func LoadSecureBootSigner(keyPath, certPath string) (*SecureBootSigner, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read Secure Boot certificate: %w", err)
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("Secure Boot certificate %s: no PEM CERTIFICATE block", certPath)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("Secure Boot certificate %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read Secure Boot key: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	clear(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("Secure Boot key %s: no PEM block", keyPath)
	}
	defer clear(kb.Bytes)
	if kb.Type == "ENCRYPTED PRIVATE KEY" || kb.Headers["Proc-Type"] != "" {
		return nil, fmt.Errorf("Secure Boot key %s is encrypted: decrypt it into a file only root can read (openssl pkey -in KEY -out PLAIN), or keep it on a machine whose disk is encrypted", keyPath)
	}
	var key any
	switch kb.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	default:
		return nil, fmt.Errorf("Secure Boot key %s: PEM block %q is not a private key", keyPath, kb.Type)
	}
	if err != nil {
		// The parser's error describes the structure, not the key's value.
		return nil, fmt.Errorf("Secure Boot key %s: %w", keyPath, err)
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("Secure Boot key %s is not RSA (UEFI db keys are RSA-2048 or larger)", keyPath)
	}
	if !rk.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("Secure Boot key %s does not belong to certificate %s", keyPath, certPath)
	}
	return &SecureBootSigner{key: rk, cert: cert}, nil
}

// Cert is the signer's certificate.
func (s *SecureBootSigner) Cert() *x509.Certificate { return s.cert }

// SignPE returns img with an Authenticode signature appended (a WIN_CERTIFICATE of
// type PKCS_SIGNED_DATA in the certificate table) and the PE checksum updated. img
// must not be signed already.
func (s *SecureBootSigner) SignPE(img []byte) ([]byte, error) {
	l, err := parsePE(img)
	if err != nil {
		return nil, err
	}
	if l.certSize != 0 {
		return nil, errors.New("the PE image is signed already: sign the unsigned image")
	}
	// The certificate table starts 8-byte aligned; the padding is part of the hashed
	// image (the firmware hashes everything before the table).
	out := make([]byte, len(img), len(img)+7+8+4096)
	copy(out, img)
	for len(out)%8 != 0 {
		out = append(out, 0)
	}
	p7, err := s.signedData(authenticodeDigest(out, l))
	if err != nil {
		return nil, err
	}
	certOff := len(out)
	winCert := binary.LittleEndian.AppendUint32(nil, uint32(8+len(p7)))
	winCert = binary.LittleEndian.AppendUint16(winCert, 0x0200) // WIN_CERT_REVISION_2_0
	winCert = binary.LittleEndian.AppendUint16(winCert, 0x0002) // WIN_CERT_TYPE_PKCS_SIGNED_DATA
	winCert = append(winCert, p7...)
	for len(winCert)%8 != 0 {
		winCert = append(winCert, 0)
	}
	out = append(out, winCert...)
	binary.LittleEndian.PutUint32(out[l.certDirOff:], uint32(certOff))
	binary.LittleEndian.PutUint32(out[l.certDirOff+4:], uint32(len(winCert)))
	binary.LittleEndian.PutUint32(out[l.checksumOff:], peChecksum(out, l.checksumOff))
	return out, nil
}

// signedData is the PKCS#7 ContentInfo (SignedData over an SpcIndirectDataContent
// carrying digest) that Authenticode puts in the certificate table.
func (s *SecureBootSigner) signedData(digest []byte) ([]byte, error) {
	sha256Alg := derTLV(tagSequence, derOID(oidSHA256), derNull)
	indirect := derTLV(tagSequence,
		derTLV(tagSequence, derOID(oidSpcPEImageData), derTLV(tagSequence, spcPEImageDataLegacy)),
		derTLV(tagSequence, sha256Alg, derTLV(tagOctets, digest)))
	// Authenticode's quirk: messageDigest covers the SpcIndirectDataContent's
	// contents, without its SEQUENCE tag and length.
	_, contents, err := splitTLV(indirect)
	if err != nil {
		return nil, err
	}
	contentDigest := sha256.Sum256(contents)
	attrs := [][]byte{
		derTLV(tagSequence, derOID(oidContentType), derTLV(tagSet, derOID(oidSpcIndirectData))),
		derTLV(tagSequence, derOID(oidSpcSpOpusInfo), derTLV(tagSet, derTLV(tagSequence))),
		derTLV(tagSequence, derOID(oidMessageDigest), derTLV(tagSet, derTLV(tagOctets, contentDigest[:]))),
	}
	slices.SortFunc(attrs, bytes.Compare) // DER orders a SET OF by encoding
	attrDigest := sha256.Sum256(derTLV(tagSet, attrs...))
	sig, err := s.key.Sign(rand.Reader, attrDigest[:], crypto.SHA256) // PKCS#1 v1.5: deterministic
	if err != nil {
		return nil, fmt.Errorf("sign the image digest: %w", err)
	}
	serial, err := asn1.Marshal(s.cert.SerialNumber)
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	signerInfo := derTLV(tagSequence,
		derTLV(tagInteger, []byte{1}),
		derTLV(tagSequence, s.cert.RawIssuer, serial),
		sha256Alg,
		derTLV(tagCtx0, attrs...),
		derTLV(tagSequence, derOID(oidRSAEncryption), derNull),
		derTLV(tagOctets, sig))
	signed := derTLV(tagSequence,
		derTLV(tagInteger, []byte{1}),
		derTLV(tagSet, sha256Alg),
		derTLV(tagSequence, derOID(oidSpcIndirectData), derTLV(tagCtx0, indirect)),
		derTLV(tagCtx0, s.cert.Raw),
		derTLV(tagSet, signerInfo))
	return derTLV(tagSequence, derOID(oidSignedData), derTLV(tagCtx0, signed)), nil
}

// splitTLV returns the tag and the contents of one DER element.
func splitTLV(b []byte) (byte, []byte, error) {
	var raw asn1.RawValue
	rest, err := asn1.Unmarshal(b, &raw)
	if err != nil || len(rest) != 0 {
		return 0, nil, fmt.Errorf("malformed DER element: %v", err)
	}
	return b[0], raw.Bytes, nil
}

// peChecksum is the PE image checksum (as IMAGHELP's CheckSumMappedFile computes it):
// the 16-bit one's-complement-style sum of the file with the checksum field as zero,
// plus the file length. UEFI does not check it; tools that print it expect it right.
func peChecksum(b []byte, checksumOff int) uint32 {
	var sum uint64
	for i := 0; i+1 < len(b); i += 2 {
		if i == checksumOff || i == checksumOff+2 {
			continue
		}
		sum += uint64(binary.LittleEndian.Uint16(b[i:]))
		sum = (sum & 0xffff) + (sum >> 16)
	}
	if len(b)%2 == 1 {
		sum += uint64(b[len(b)-1])
		sum = (sum & 0xffff) + (sum >> 16)
	}
	sum = (sum & 0xffff) + (sum >> 16)
	return uint32(sum) + uint32(len(b))
}

// VerifyPEDigest reports whether the Authenticode digest that img's signature
// carries matches the image. It does not check the signature's key (the firmware
// and sbverify do); it is a cheap check that a file is intact and was signed after
// its last change.
func VerifyPEDigest(img []byte) error {
	l, err := parsePE(img)
	if err != nil {
		return err
	}
	if l.certSize < 8 {
		return errors.New("the PE image is not signed")
	}
	want := authenticodeDigest(img, l)
	if !bytes.Contains(img[l.certOff:], derTLV(tagOctets, want)) {
		return errors.New("the PE image's Authenticode digest does not match its signature")
	}
	return nil
}

// AuthenticodeSHA256 is the hex Authenticode SHA-256 of a PE/COFF image: what UEFI
// firmware extends into PCR 4 (an EV_EFI_BOOT_SERVICES_APPLICATION event) when it
// starts the image, signed or not. Kiln compares it with a TPM quote's event log to
// tell whether a machine booted the kernel or UKI it served.
func AuthenticodeSHA256(img []byte) (string, error) {
	l, err := parsePE(img)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(authenticodeDigest(img, l)), nil
}
