package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"

	"github.com/kilnhq/kiln/internal/store"
)

// Envelope encryption, AES-256-GCM throughout (the standard library's; XChaCha20 would
// need golang.org/x/crypto for no gain here):
//
//   - every secret version gets a fresh random 256-bit data key (DEK), used for that
//     one value only, so its random 96-bit nonce can never repeat under it;
//   - the value is sealed under the DEK (nonce and ciphertext columns);
//   - the DEK is sealed under the key-encryption key (wrapped_dek column: nonce, then
//     ciphertext), and the row records the KEK's id.
//
// Both seals authenticate the secret's name and version as additional data, so a row's
// ciphertext or wrapped key cannot be moved to another secret or version unnoticed.
// Rotating the KEK re-wraps only the small DEKs; values are not re-encrypted.

// ErrKeyUnavailable: a value is wrapped with a key-encryption key this server has not
// loaded (another replica rotated the key, or the wrong key file was given).
var ErrKeyUnavailable = errors.New("key-encryption key not loaded")

const dekSize = 32

func aad(purpose, name string, version int64) []byte {
	return []byte("kiln-" + purpose + "-v1\x00" + name + "\x00" + strconv.FormatInt(version, 10))
}

func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("read random bytes: %w", err)
	}
	return b, nil
}

// wrap seals a DEK under k: nonce || ciphertext.
func (k *kek) wrap(dek []byte, name string, version int64) ([]byte, error) {
	nonce, err := randomBytes(k.aead.NonceSize())
	if err != nil {
		return nil, err
	}
	return k.aead.Seal(nonce, nonce, dek, aad("dek", name, version)), nil
}

// unwrap opens a DEK wrapped by wrap.
func (k *kek) unwrap(wrapped []byte, name string, version int64) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(wrapped) < n+k.aead.Overhead() {
		return nil, fmt.Errorf("secret %q version %d: wrapped data key is malformed", name, version)
	}
	dek, err := k.aead.Open(nil, wrapped[:n], wrapped[n:], aad("dek", name, version))
	if err != nil {
		return nil, fmt.Errorf("secret %q version %d: cannot unwrap the data key (the key-encryption key %s does not match, or the row was altered)", name, version, k.id)
	}
	return dek, nil
}

// seal encrypts a value for version v of a secret; it fills v's key and ciphertext fields.
func (r *KeyRing) seal(v *store.SecretVersion, plain []byte) error {
	k := r.currentKEK()
	dek, err := randomBytes(dekSize)
	if err != nil {
		return err
	}
	defer clear(dek)
	a, err := gcm(dek)
	if err != nil {
		return err
	}
	nonce, err := randomBytes(a.NonceSize())
	if err != nil {
		return err
	}
	wrapped, err := k.wrap(dek, v.Name, v.Version)
	if err != nil {
		return err
	}
	v.KEKID, v.WrappedDEK = k.id, wrapped
	v.Nonce, v.Ciphertext = nonce, a.Seal(nil, nonce, plain, aad("value", v.Name, v.Version))
	return nil
}

// open decrypts a stored version.
func (r *KeyRing) open(v *store.SecretVersion) ([]byte, error) {
	k, ok := r.lookup(v.KEKID)
	if !ok {
		return nil, fmt.Errorf("secret %q version %d is wrapped with key-encryption key %s, which this server has not loaded (it has %v): %w",
			v.Name, v.Version, v.KEKID, r.IDs(), ErrKeyUnavailable)
	}
	dek, err := k.unwrap(v.WrappedDEK, v.Name, v.Version)
	if err != nil {
		return nil, err
	}
	defer clear(dek)
	a, err := gcm(dek)
	if err != nil {
		return nil, err
	}
	if len(v.Nonce) != a.NonceSize() {
		return nil, fmt.Errorf("secret %q version %d: nonce is malformed", v.Name, v.Version)
	}
	plain, err := a.Open(nil, v.Nonce, v.Ciphertext, aad("value", v.Name, v.Version))
	if err != nil {
		return nil, fmt.Errorf("secret %q version %d: cannot decrypt (the row was altered)", v.Name, v.Version)
	}
	return plain, nil
}

// rewrap unwraps v's DEK with the key its row names and wraps it with to.
func (r *KeyRing) rewrap(v *store.SecretVersion, to *kek) ([]byte, error) {
	k, ok := r.lookup(v.KEKID)
	if !ok {
		return nil, fmt.Errorf("secret %q version %d is wrapped with key-encryption key %s, which this server has not loaded: %w",
			v.Name, v.Version, v.KEKID, ErrKeyUnavailable)
	}
	dek, err := k.unwrap(v.WrappedDEK, v.Name, v.Version)
	if err != nil {
		return nil, err
	}
	defer clear(dek)
	return to.wrap(dek, v.Name, v.Version)
}
