package enroll

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// CSR rules. Kiln takes only the public key from a CSR: the certificate's subject and
// SANs are the machine's name, which Kiln assigns. A CSR may say nothing about names
// (empty subject, no SANs: the usual case, since an agent enrolling with a generic
// token cannot know the name Kiln will give it) or say exactly what Kiln assigns
// (CN = the name and at most one DNS SAN = the name). Anything else — another CN,
// other subject attributes, extra SANs of any type, requested extensions — is refused,
// never silently dropped, so an agent learns at once that it asked for something it
// will not get.

// MaxCSRBytes bounds a CSR, PEM included.
const MaxCSRBytes = 16 << 10

// csrInfo is what Kiln uses from a checked CSR.
type csrInfo struct {
	pub     crypto.PublicKey
	cn      string // "" or the name the CSR asks for
	dns     string // "" or its one DNS SAN
	keyHash string // SHA-256 of the SubjectPublicKeyInfo, hex
	keyDesc string // "ECDSA P-256"
	// channel is the TLS channel binding the CSR carries (see ChannelBindingLabel), or nil.
	channel []byte
}

// Channel binding. A CSR may carry, in its challengePassword attribute, the channel
// binding of the TLS connection it is sent on: "tls-exporter:" and the base64 of the
// connection's RFC 9266 exporter value (label ChannelBindingLabel, no context, 32
// bytes). That is how EST (RFC 7030 section 3.5) ties a CSR to its TLS session, with
// TLS 1.3's exporter for tls-unique. Its signature then proves that the client on
// this connection holds the key, and Kiln lets the connection go on as the machine
// once it has certified the key (connbind.go). A CSR bound to another connection is
// refused: it was replayed or relayed.
// The values are agentwire's: the agent writes what this reads.
const (
	ChannelBindingLabel  = agentwire.ChannelBindingLabel
	channelBindingPrefix = agentwire.ChannelBindingPrefix
	channelBindingBytes  = agentwire.ChannelBindingBytes
)

var (
	oidChallengePassword = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
	oidExtensionRequest  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
)

// csrAttributes returns the channel binding of a CSR's attributes; any attribute
// other than extensionRequest (read by crypto/x509) and a channel-binding
// challengePassword is refused.
func csrAttributes(tbs []byte) ([]byte, error) {
	var info struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []asn1.RawValue `asn1:"optional,tag:0"`
	}
	if _, err := asn1.Unmarshal(tbs, &info); err != nil {
		return nil, csrErr("malformed attributes: %v", truncate(err.Error(), 120))
	}
	var binding []byte
	for _, raw := range info.Attributes {
		var attr struct {
			Type   asn1.ObjectIdentifier
			Values []asn1.RawValue `asn1:"set"`
		}
		if rest, err := asn1.Unmarshal(raw.FullBytes, &attr); err != nil || len(rest) > 0 {
			return nil, csrErr("malformed attribute")
		}
		switch {
		case attr.Type.Equal(oidExtensionRequest):
		case attr.Type.Equal(oidChallengePassword):
			if binding != nil || len(attr.Values) != 1 {
				return nil, csrErr("challengePassword: one value, the TLS channel binding, is allowed")
			}
			v := attr.Values[0]
			if v.Class != asn1.ClassUniversal || (v.Tag != asn1.TagUTF8String && v.Tag != asn1.TagPrintableString) {
				return nil, csrErr("challengePassword: not a UTF8String or PrintableString")
			}
			b64, ok := strings.CutPrefix(string(v.Bytes), channelBindingPrefix)
			if !ok {
				return nil, csrErr("challengePassword is only used for the TLS channel binding (%s<base64>); Kiln takes no passwords in CSRs", channelBindingPrefix)
			}
			b, err := base64.StdEncoding.DecodeString(b64)
			if err != nil || len(b) != channelBindingBytes {
				return nil, csrErr("challengePassword: the channel binding is not the base64 of %d bytes", channelBindingBytes)
			}
			binding = b
		default:
			return nil, csrErr("attribute %s is not allowed", attr.Type)
		}
	}
	return binding, nil
}

// CSRError says why a CSR was refused.
type CSRError struct{ Reason string }

func (e *CSRError) Error() string { return "csr: " + e.Reason }

func csrErr(format string, a ...any) error { return &CSRError{Reason: fmt.Sprintf(format, a...)} }

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}
var oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}

// parseCSR checks a PEM CSR's form, signature, key and names (see above).
func parseCSR(pemText string) (*csrInfo, error) {
	if pemText == "" {
		return nil, csrErr("missing")
	}
	if len(pemText) > MaxCSRBytes {
		return nil, csrErr("longer than %d bytes", MaxCSRBytes)
	}
	block, rest := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, csrErr("not PEM")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, csrErr("PEM block is %q, not CERTIFICATE REQUEST", truncate(block.Type, 40))
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, csrErr("data after the CERTIFICATE REQUEST block")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, csrErr("malformed: %v", truncate(err.Error(), 120))
	}
	if err := req.CheckSignature(); err != nil {
		return nil, csrErr("signature does not verify: the CSR was altered or not signed by its key")
	}
	if err := checkKeyStrength(req.PublicKey); err != nil {
		return nil, csrErr("%v", err)
	}
	info := &csrInfo{pub: req.PublicKey, keyDesc: keyDescription(req.PublicKey)}
	if info.channel, err = csrAttributes(req.RawTBSCertificateRequest); err != nil {
		return nil, err
	}
	for _, atv := range req.Subject.Names {
		if !atv.Type.Equal(oidCN) {
			return nil, csrErr("subject attribute %s is not allowed: only CN, and only the machine's name", atv.Type)
		}
	}
	if len(req.Subject.Names) > 1 {
		return nil, csrErr("subject has %d CNs, at most one is allowed", len(req.Subject.Names))
	}
	info.cn = req.Subject.CommonName
	if len(req.EmailAddresses)+len(req.IPAddresses)+len(req.URIs) > 0 {
		return nil, csrErr("SANs other than the machine's DNS name are not allowed (e-mail, IP or URI SAN present)")
	}
	switch len(req.DNSNames) {
	case 0:
	case 1:
		info.dns = req.DNSNames[0]
		if info.cn != "" && info.dns != info.cn {
			return nil, csrErr("DNS SAN %q differs from CN %q: both must be the machine's name", truncate(info.dns, 64), truncate(info.cn, 64))
		}
	default:
		return nil, csrErr("%d DNS SANs: at most one, the machine's name, is allowed", len(req.DNSNames))
	}
	for _, ext := range req.Extensions {
		if !ext.Id.Equal(oidSAN) {
			return nil, csrErr("requests extension %s: Kiln sets a certificate's extensions itself", ext.Id)
		}
	}
	spki, err := x509.MarshalPKIXPublicKey(req.PublicKey)
	if err != nil {
		return nil, csrErr("public key: %v", err)
	}
	h := sha256.Sum256(spki)
	info.keyHash = hex.EncodeToString(h[:])
	return info, nil
}

// checkName checks a CSR's names against the name Kiln assigns.
func (c *csrInfo) checkName(name string) error {
	if c.cn != "" && c.cn != name {
		return csrErr("subject CN %q is not the name Kiln assigns (%q)", truncate(c.cn, 64), name)
	}
	if c.dns != "" && c.dns != name {
		return csrErr("DNS SAN %q is not the name Kiln assigns (%q)", truncate(c.dns, 64), name)
	}
	return nil
}

// checkKeyStrength accepts ECDSA P-256 and P-384, Ed25519 and RSA of 2048 to 8192 bits.
func checkKeyStrength(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384():
			return nil
		}
		return fmt.Errorf("weak or unsupported key: ECDSA on %s (use P-256 or P-384)", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < 2048 {
			return fmt.Errorf("weak key: RSA %d bits (at least 2048)", bits)
		}
		if bits > 8192 {
			return fmt.Errorf("RSA %d bits: larger than 8192 is not accepted", bits)
		}
		return nil
	}
	return fmt.Errorf("unsupported key type %T (use ECDSA P-256)", pub)
}

func keyDescription(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}
