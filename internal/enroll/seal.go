package enroll

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/kilnhq/kiln/internal/secrets"
)

// The key-encryption key is the one internal/secrets loads: one file, one format.
const KEKSize = secrets.KEKSize

// ParseKEK reads a key-encryption key written as 64 hex digits or base64 of 32 bytes.
func ParseKEK(s string) ([]byte, error) { return secrets.ParseKEK(s) }

// LoadKEK reads the key-encryption key in path; with create, a missing file gets a new
// random key (mode 0600). A key file that group or others can read is refused.
func LoadKEK(path string, create bool) ([]byte, error) {
	if create {
		return secrets.LoadOrCreateKEK(path)
	}
	k, err := secrets.LoadKEK(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("key-encryption key %s: does not exist (the CA in the store was sealed with a key this server was not given: copy the first server's key file, or set --kek-file or KILN_KEK)", path)
	}
	return k, err
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
	return &sealer{aead: aead, id: secrets.KEKID(kek)}, nil
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
