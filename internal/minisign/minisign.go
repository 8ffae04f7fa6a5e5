// Package minisign reads minisign public keys and detached signatures and verifies
// them (https://jedisct1.github.io/minisign/): Ed25519 over the BLAKE2b-512 of the
// file, plus a second Ed25519 signature binding the signature to its trusted
// comment. Kiln uses it for artifact signatures: the format is small, fully
// specified, signify-compatible in its keys, and minisign is packaged by Debian,
// so operators sign with a real tool and Kiln verifies in pure Go.
package minisign

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"

	"golang.org/x/crypto/blake2b"
)

// Algorithms of a signature: "ED" signs the BLAKE2b-512 of the file (minisign's
// default since 0.10); "Ed" (legacy, minisign -l) signs the file itself, which would
// need the whole file in memory: Kiln refuses it.
const (
	algPrehashed = "ED"
	algLegacy    = "Ed"
)

// Errors a verification can end with.
var (
	ErrUnknownKey   = errors.New("signed by a key Kiln does not trust")
	ErrBadSignature = errors.New("signature does not verify")
)

// MaxSignatureLen bounds a signature's text: four lines, two of them comments.
const MaxSignatureLen = 4096

// KeyID is a key's 8-byte id, shown as minisign shows it: the little-endian
// integer in upper-case hex without leading zeros (minisign's "%" PRIX64), so that
// one id in 16 has 15 digits.
type KeyID [8]byte

func (id KeyID) String() string { return fmt.Sprintf("%X", binary.LittleEndian.Uint64(id[:])) }

// PublicKey is a minisign public key.
type PublicKey struct {
	ID  KeyID
	Key ed25519.PublicKey
}

// ParsePublicKey reads a public key: the content of a minisign .pub file
// ("untrusted comment:" line, then the base64 line) or the base64 line alone.
func ParsePublicKey(text string) (PublicKey, error) {
	lines := splitLines(text)
	if len(lines) > 0 && strings.HasPrefix(lines[0], "untrusted comment:") {
		lines = lines[1:]
	}
	if len(lines) != 1 {
		return PublicKey{}, errors.New("minisign public key: want one base64 line (after an optional untrusted comment)")
	}
	raw, err := base64.StdEncoding.DecodeString(lines[0])
	if err != nil {
		return PublicKey{}, fmt.Errorf("minisign public key: %w", err)
	}
	if len(raw) != 2+8+32 {
		return PublicKey{}, fmt.Errorf("minisign public key: %d bytes, want 42", len(raw))
	}
	if string(raw[:2]) != algLegacy {
		return PublicKey{}, fmt.Errorf("minisign public key: algorithm %q is not Ed", raw[:2])
	}
	var k PublicKey
	copy(k.ID[:], raw[2:10])
	k.Key = ed25519.PublicKey(bytes.Clone(raw[10:]))
	return k, nil
}

// Signature is a parsed minisign signature (a .minisig file).
type Signature struct {
	Algorithm      string
	KeyID          KeyID
	sig            []byte // over the file's BLAKE2b-512
	TrustedComment string
	global         []byte // over sig || trusted comment
}

// ParseSignature reads the text of a .minisig file: an untrusted comment line, the
// base64 signature, a "trusted comment: " line, the base64 global signature. A
// trailing newline is optional; CRLF line ends are accepted.
func ParseSignature(text string) (*Signature, error) {
	if len(text) > MaxSignatureLen {
		return nil, fmt.Errorf("minisign signature: %d bytes, at most %d", len(text), MaxSignatureLen)
	}
	lines := splitLines(text)
	if len(lines) != 4 {
		return nil, fmt.Errorf("minisign signature: %d lines, want 4 (untrusted comment, signature, trusted comment, global signature)", len(lines))
	}
	if !strings.HasPrefix(lines[0], "untrusted comment:") {
		return nil, errors.New("minisign signature: line 1 is not an untrusted comment")
	}
	raw, err := base64.StdEncoding.DecodeString(lines[1])
	if err != nil {
		return nil, fmt.Errorf("minisign signature: line 2: %w", err)
	}
	if len(raw) != 2+8+64 {
		return nil, fmt.Errorf("minisign signature: line 2: %d bytes, want 74", len(raw))
	}
	tc, ok := strings.CutPrefix(lines[2], "trusted comment: ")
	if !ok {
		return nil, errors.New("minisign signature: line 3 is not a trusted comment")
	}
	global, err := base64.StdEncoding.DecodeString(lines[3])
	if err != nil {
		return nil, fmt.Errorf("minisign signature: line 4: %w", err)
	}
	if len(global) != 64 {
		return nil, fmt.Errorf("minisign signature: line 4: %d bytes, want 64", len(global))
	}
	s := &Signature{Algorithm: string(raw[:2]), sig: raw[10:], TrustedComment: tc, global: global}
	copy(s.KeyID[:], raw[2:10])
	switch s.Algorithm {
	case algPrehashed:
	case algLegacy:
		return nil, errors.New("minisign signature: legacy (not prehashed, minisign -l) signatures are not accepted: sign without -l")
	default:
		return nil, fmt.Errorf("minisign signature: algorithm %q is not ED", s.Algorithm)
	}
	return s, nil
}

func splitLines(text string) []string {
	text = strings.TrimRight(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

// NewHash returns the hash a prehashed signature covers (BLAKE2b-512): feed it the
// file, then pass its Sum to Verify.
func NewHash() hash.Hash {
	h, _ := blake2b.New512(nil) // no key: cannot fail
	return h
}

// Verify checks the signature over a file whose BLAKE2b-512 is digest with the key
// of the same id, and the global signature over the trusted comment.
func (k PublicKey) Verify(s *Signature, digest []byte) error {
	if s.KeyID != k.ID {
		return fmt.Errorf("%w: key id %s, this key is %s", ErrUnknownKey, s.KeyID, k.ID)
	}
	if !ed25519.Verify(k.Key, digest, s.sig) {
		return fmt.Errorf("%w: key %s: the file is not what was signed", ErrBadSignature, k.ID)
	}
	if !ed25519.Verify(k.Key, append(bytes.Clone(s.sig), s.TrustedComment...), s.global) {
		return fmt.Errorf("%w: key %s: the trusted comment was changed", ErrBadSignature, k.ID)
	}
	return nil
}

// KeyRing is a set of trusted keys.
type KeyRing []PublicKey

// Verify checks s with the ring's key of the signature's key id.
func (r KeyRing) Verify(s *Signature, digest []byte) error {
	for _, k := range r {
		if k.ID == s.KeyID {
			return k.Verify(s, digest)
		}
	}
	return fmt.Errorf("%w: key id %s", ErrUnknownKey, s.KeyID)
}
