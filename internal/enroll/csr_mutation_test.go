package enroll

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
)

// Bounds and alternatives of the CSR, token and facts parsers, each at its edge: the
// largest input accepted and the smallest refused, every alternative of an "or".

// A CSR of exactly MaxCSRBytes (trailing blank lines count) is read; one byte more
// is refused before it is decoded. A "NEW CERTIFICATE REQUEST" block (older
// openssl, Netscape) is a CSR too.
func TestCSRSizeAndBlockType(t *testing.T) {
	key, err := newP256()
	if err != nil {
		t.Fatal(err)
	}
	csr := csrPEM(t, nil, key)
	block, _ := pem.Decode([]byte(csr))
	atMax := csr + strings.Repeat("\n", MaxCSRBytes-len(csr))
	cases := []struct {
		name, pem, wantErr string
	}{
		{"exactly MaxCSRBytes", atMax, ""},
		{"one byte over", atMax + "\n", fmt.Sprintf("longer than %d bytes", MaxCSRBytes)},
		{"NEW CERTIFICATE REQUEST", string(pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: block.Bytes})), ""},
		{"CERTIFICATE", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})), `PEM block is "CERTIFICATE"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			info, err := parseCSR(tc.pem)
			if tc.wantErr == "" {
				if err != nil || info.keyDesc != "ECDSA P-256" {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// Any SAN other than one DNS name is refused, whichever kind it is and alone.
func TestCSROtherSANsRefused(t *testing.T) {
	key, err := newP256()
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://kiln/web-1")
	for name, tmpl := range map[string]*x509.CertificateRequest{
		"e-mail": {EmailAddresses: []string{"root@web-1"}},
		"IP":     {IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}},
		"URI":    {URIs: []*url.URL{u}},
	} {
		if _, err := parseCSR(csrPEM(t, tmpl, key)); err == nil || !strings.Contains(err.Error(), "SANs other than") {
			t.Errorf("%s SAN: %v, want refused", name, err)
		}
	}
}

// The channel binding may be a UTF8String (what the agent writes) or a
// PrintableString (what other tools write for a printable value); any other string
// type is refused.
func TestCSRChallengePasswordStringTypes(t *testing.T) {
	binding := make([]byte, channelBindingBytes)
	for i := range binding {
		binding[i] = byte(i)
	}
	value := []byte(channelBindingPrefix + base64.StdEncoding.EncodeToString(binding))
	tbs := func(tag int) []byte {
		attr, err := asn1.Marshal(struct {
			Type   asn1.ObjectIdentifier
			Values []asn1.RawValue `asn1:"set"`
		}{oidChallengePassword, []asn1.RawValue{{Tag: tag, Bytes: value}}})
		if err != nil {
			t.Fatal(err)
		}
		info, err := asn1.Marshal(struct {
			Version    int
			Subject    asn1.RawValue
			PublicKey  asn1.RawValue
			Attributes []asn1.RawValue `asn1:"tag:0"`
		}{0, asn1.RawValue{FullBytes: []byte{0x30, 0}}, asn1.RawValue{FullBytes: []byte{0x30, 0}}, []asn1.RawValue{{FullBytes: attr}}})
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	cases := []struct {
		name string
		tag  int
		ok   bool
	}{
		{"UTF8String", asn1.TagUTF8String, true},
		{"PrintableString", asn1.TagPrintableString, true},
		{"IA5String", asn1.TagIA5String, false},
		{"OCTET STRING", asn1.TagOctetString, false},
	}
	for _, tc := range cases {
		got, err := csrAttributes(tbs(tc.tag))
		if tc.ok {
			if err != nil || string(got) != string(binding) {
				t.Errorf("%s: binding %x, err %v; want accepted", tc.name, got, err)
			}
		} else if err == nil || !strings.Contains(err.Error(), "not a UTF8String or PrintableString") {
			t.Errorf("%s: err %v, want refused", tc.name, err)
		}
	}
}

// RSA keys of 2048 to 8192 bits are accepted, both bounds included.
func TestRSAKeySizeBounds(t *testing.T) {
	for _, tc := range []struct {
		bits int
		ok   bool
	}{{2047, false}, {2048, true}, {3072, true}, {8192, true}, {8193, false}} {
		// The size check reads only the modulus' length: no key of that size is made.
		n := new(big.Int).Lsh(big.NewInt(1), uint(tc.bits-1))
		n.Add(n, big.NewInt(1))
		err := checkKeyStrength(&rsa.PublicKey{N: n, E: 65537})
		if (err == nil) != tc.ok {
			t.Errorf("RSA %d: %v, want accepted %v", tc.bits, err, tc.ok)
		}
	}
}

// truncate leaves text of at most n bytes as it is and marks a cut.
func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{{"", 3, ""}, {"ab", 3, "ab"}, {"abc", 3, "abc"}, {"abcd", 3, "abc..."}} {
		if got := truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// FactMACs keeps the first 64 distinct MACs of the facts, and no more.
func TestFactMACsCap(t *testing.T) {
	var ifs []any
	for i := range 70 {
		ifs = append(ifs, map[string]any{"mac": fmt.Sprintf("52:54:00:00:01:%02x", i)})
	}
	got := FactMACs(map[string]any{"interfaces": ifs})
	if len(got) != 64 || got[0] != "52:54:00:00:01:00" || got[63] != "52:54:00:00:01:3f" {
		t.Fatalf("%d MACs: %v", len(got), got)
	}
}

// An interface name is used up to Linux's IFNAMSIZ-1 (15) bytes.
func TestInterfaceNameLength(t *testing.T) {
	const mac = "52:54:00:00:02:01"
	for _, tc := range []struct{ name, want string }{
		{"enp1s0", "enp1s0"},
		{"enp0s20f0u1u2c2", "enp0s20f0u1u2c2"}, // 15 bytes
		{"enp0s20f0u1u2c2x", ""},               // 16 bytes
		{"eth 0", ""},
	} {
		f := map[string]any{"interfaces": []any{map[string]any{"name": tc.name, "mac": mac}}}
		if got := interfaceName(f, mac); got != tc.want {
			t.Errorf("interfaceName(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// A token of exactly MaxTokenBytes is signed and parsed; one byte more is refused on
// both sides.
func TestTokenSizeBound(t *testing.T) {
	key := testKey(t)
	pub := key.Public().(ed25519.PublicKey)
	// Pad the profile until the token is MaxTokenBytes long; base64 skips some
	// lengths, so a one-byte nonce shifts the payload when the first pass skips it.
	var tok string
	for _, nonce := range []string{"", "n", "nn"} {
		for pad := 5500; pad < MaxTokenBytes; pad++ {
			s, err := signToken(key, &Claims{ID: "jt-1", Expires: 1, Nonce: nonce, Scope: Scope{Profile: strings.Repeat("p", pad)}})
			if err != nil || len(s) >= MaxTokenBytes {
				if len(s) == MaxTokenBytes {
					tok = s
				}
				break
			}
		}
		if tok != "" {
			break
		}
	}
	if len(tok) != MaxTokenBytes {
		t.Fatalf("no token of exactly %d bytes signed", MaxTokenBytes)
	}
	c, err := parseToken(pub, tok)
	if err != nil || c.ID != "jt-1" {
		t.Fatalf("parse a %d-byte token: %v", len(tok), err)
	}
	if _, err := parseToken(pub, tok+"x"); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("parse a token one byte longer: %v", err)
	}
	over := &Claims{ID: "jt-1", Expires: 1, Scope: Scope{Profile: strings.Repeat("p", MaxTokenBytes)}}
	if _, err := signToken(key, over); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("sign an oversized token: %v", err)
	}
}
