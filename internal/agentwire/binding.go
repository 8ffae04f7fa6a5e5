package agentwire

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"fmt"
)

// Channel binding of an enrollment CSR. The agent puts the RFC 9266 tls-exporter
// value of its TLS connection into the CSR's challengePassword attribute, as EST
// (RFC 7030 section 3.5) ties a CSR to its TLS session; the server checks that the
// value is that of the connection the CSR came on. Both sides must agree on the
// exporter label, the value's length and the attribute's prefix, so they are here.
const (
	// ChannelBindingLabel is RFC 9266's exporter label (no context).
	ChannelBindingLabel = "EXPORTER-Channel-Binding"
	// ChannelBindingBytes is the length of the exported value.
	ChannelBindingBytes = 32
	// ChannelBindingPrefix starts the challengePassword; the base64 value follows.
	ChannelBindingPrefix = "tls-exporter:"
)

// ChannelBoundCSR makes a PKCS #10 CSR for key with no names (Kiln assigns them) and
// binding in its challengePassword attribute. crypto/x509 cannot write that
// attribute (it writes attributes as name sets), so the request is built here.
func ChannelBoundCSR(key *ecdsa.PrivateKey, binding []byte) (string, error) {
	oidChallengePassword := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
	oidECDSAWithSHA256 := asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return "", fmt.Errorf("channel-bound CSR: public key: %w", err)
	}
	value := ChannelBindingPrefix + base64.StdEncoding.EncodeToString(binding)
	attr, err := asn1.Marshal(struct {
		Type   asn1.ObjectIdentifier
		Values []asn1.RawValue `asn1:"set"`
	}{oidChallengePassword, []asn1.RawValue{{Tag: asn1.TagUTF8String, Bytes: []byte(value)}}})
	if err != nil {
		return "", fmt.Errorf("channel-bound CSR: challengePassword: %w", err)
	}
	info, err := asn1.Marshal(struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []asn1.RawValue `asn1:"tag:0"`
	}{0, asn1.RawValue{FullBytes: []byte{0x30, 0}}, asn1.RawValue{FullBytes: spki}, []asn1.RawValue{{FullBytes: attr}}})
	if err != nil {
		return "", fmt.Errorf("channel-bound CSR: request info: %w", err)
	}
	digest := sha256.Sum256(info)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return "", fmt.Errorf("channel-bound CSR: sign: %w", err)
	}
	der, err := asn1.Marshal(struct {
		Info      asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: info}, pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256}, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		return "", fmt.Errorf("channel-bound CSR: encode: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}
