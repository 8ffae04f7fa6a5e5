package enroll

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// Join tokens are compact JWS / JWT (RFC 7515, 7519) signed with EdDSA (RFC 8037):
// base64url(header) "." base64url(claims) "." base64url(ed25519 signature). The parser
// accepts only what Kiln itself produces: alg EdDSA, three segments, unpadded canonical
// base64url, no unknown header fields or claims, bounded sizes. Everything else
// (alg none, HS256 with the public key as secret, a fourth segment, JWE) is refused
// before any claim is read.

// MaxTokenBytes bounds a token string. A token with a long policy and many MACs stays
// well under it.
const MaxTokenBytes = 8 << 10

// tokenHeader is the only header Kiln writes.
const tokenHeader = `{"alg":"EdDSA","typ":"JWT"}`

// Claims are a join token's signed contents.
type Claims struct {
	ID        string `json:"jti"`
	Issuer    string `json:"iss"`
	IssuedAt  int64  `json:"iat"`
	NotBefore int64  `json:"nbf,omitempty"`
	Expires   int64  `json:"exp"`
	Scope     Scope  `json:"scope"`
	// Nonce makes two tokens minted in the same second for the same scope differ
	// (ed25519 signatures are deterministic).
	Nonce string `json:"nonce,omitempty"`
}

// Scope is what a token may enroll, and into what.
type Scope struct {
	// Profile and Labels are given to a machine the enrollment creates.
	Profile string            `json:"profile"`
	Labels  map[string]string `json:"labels,omitempty"`
	// MACs, if any: one of the machine's reported MACs must be among them.
	MACs []string `json:"macs,omitempty"`
	// CIDRs, if any: the request must come from one of them.
	CIDRs []string `json:"cidrs,omitempty"`
	// Machine, if set: the enrollment binds (or creates) this machine and no other.
	Machine string `json:"machine,omitempty"`
	// Policy holds CEL expressions that must all be true (see policy.go).
	Policy []string `json:"policy,omitempty"`
	// Boot marks a per-boot token minted with a machine's iPXE script.
	Boot bool `json:"boot,omitempty"`
	// Addr, on a per-boot token: the address Kiln leased to the machine, the only one
	// the script was served to and the only one the enrollment may come from.
	Addr string `json:"addr,omitempty"`
}

// TokenError says why a token string was refused. Its message never contains the token.
type TokenError struct{ Reason string }

func (e *TokenError) Error() string { return "token: " + e.Reason }

func tokenErr(format string, a ...any) error { return &TokenError{Reason: fmt.Sprintf(format, a...)} }

var b64 = base64.RawURLEncoding.Strict()

// signToken encodes and signs claims.
func signToken(key ed25519.PrivateKey, c *Claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := b64.EncodeToString([]byte(tokenHeader)) + "." + b64.EncodeToString(payload)
	sig := ed25519.Sign(key, []byte(signing))
	tok := signing + "." + b64.EncodeToString(sig)
	if len(tok) > MaxTokenBytes {
		return "", fmt.Errorf("token would be %d bytes, more than %d: fewer MACs, CIDRs, labels or policy", len(tok), MaxTokenBytes)
	}
	return tok, nil
}

// parseToken checks a token's form and signature and returns its claims. Times are
// the caller's to check.
func parseToken(pub ed25519.PublicKey, tok string) (*Claims, error) {
	if tok == "" {
		return nil, tokenErr("missing")
	}
	if len(tok) > MaxTokenBytes {
		return nil, tokenErr("longer than %d bytes", MaxTokenBytes)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, tokenErr("malformed: %d segments, a signed JWT has 3", len(parts))
	}
	hdr, err := b64.DecodeString(parts[0])
	if err != nil {
		return nil, tokenErr("malformed header: not base64url")
	}
	var h struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
	}
	if err := strictJSON(hdr, &h); err != nil {
		return nil, tokenErr("malformed header: %v", err)
	}
	if h.Alg != "EdDSA" {
		return nil, tokenErr("algorithm %q is not accepted (only EdDSA)", truncate(h.Alg, 20))
	}
	if h.Typ != "" && h.Typ != "JWT" {
		return nil, tokenErr("type %q is not JWT", truncate(h.Typ, 20))
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, tokenErr("malformed signature")
	}
	if !ed25519.Verify(pub, []byte(tok[:len(parts[0])+1+len(parts[1])]), sig) {
		return nil, tokenErr("signature does not verify (tampered with, or signed by another Kiln)")
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, tokenErr("malformed claims: not base64url")
	}
	var c Claims
	if err := strictJSON(payload, &c); err != nil {
		return nil, tokenErr("malformed claims: %v", err)
	}
	if c.ID == "" || c.Expires == 0 {
		return nil, tokenErr("malformed claims: jti and exp are required")
	}
	return &c, nil
}
