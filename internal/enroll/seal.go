package enroll

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KEKSize is the size of a key-encryption key: AES-256.
const KEKSize = 32

// ParseKEK reads a key-encryption key written as 64 hex digits or as base64 of 32
// bytes (what `openssl rand -hex 32` or `-base64 32` print).
func ParseKEK(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 2*KEKSize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == KEKSize {
			return b, nil
		}
	}
	return nil, fmt.Errorf("not a %d-byte key written as 64 hex digits or base64", KEKSize)
}

// LoadKEK reads the key-encryption key in path. If the file does not exist and create
// is true, a new random key is written there with mode 0600. A key file that group or
// others can read is refused: it protects the CA's private key.
func LoadKEK(path string, create bool) ([]byte, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		return createKEK(path)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("key-encryption key %s: does not exist (the CA in the store was sealed with a key this server was not given: copy the first server's key file, or set --kek-file or KILN_KEK)", path)
	case err != nil:
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key-encryption key %s: mode %04o lets others read it; chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	k, err := ParseKEK(string(data))
	if err != nil {
		return nil, fmt.Errorf("key-encryption key %s: %v", path, err)
	}
	return k, nil
}

func createKEK(path string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	k := make([]byte, KEKSize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	// O_EXCL: two processes sharing a data dir must not each write their own key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadKEK(path, false)
	}
	if err != nil {
		return nil, fmt.Errorf("create key-encryption key: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(k) + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write key-encryption key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return k, nil
}

// sealer encrypts key material at rest with AES-256-GCM under the KEK. The purpose
// ("ca-key", "token-key") is authenticated data, so one sealed value cannot be swapped
// for another.
type sealer struct {
	aead cipher.AEAD
	id   string
}

const sealPrefix = "kiln-seal-v1:"

func newSealer(kek []byte) (*sealer, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("key-encryption key: %d bytes, want %d", len(kek), KEKSize)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead, id: kekID(kek)}, nil
}

// kekID names a KEK without revealing it, so a wrong key is reported as such.
func kekID(kek []byte) string {
	h := sha256.Sum256(append([]byte("kiln-kek-id:"), kek...))
	return hex.EncodeToString(h[:8])
}

func (s *sealer) seal(purpose string, plain []byte) (string, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	ct := s.aead.Seal(nonce, nonce, plain, []byte(purpose))
	return sealPrefix + base64.StdEncoding.EncodeToString(ct), nil
}

func (s *sealer) open(purpose, sealed string) ([]byte, error) {
	b64, ok := strings.CutPrefix(sealed, sealPrefix)
	if !ok {
		return nil, fmt.Errorf("%s: not a sealed value", purpose)
	}
	ct, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(ct) < s.aead.NonceSize()+s.aead.Overhead() {
		return nil, fmt.Errorf("%s: sealed value is malformed", purpose)
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, ct[:n], ct[n:], []byte(purpose))
	if err != nil {
		return nil, fmt.Errorf("%s: cannot decrypt (wrong key-encryption key, or the value was altered)", purpose)
	}
	return plain, nil
}
