package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// KEKSize is the size of a key-encryption key: AES-256.
const KEKSize = 32

// KEKFileName is the key-encryption key's file in the data directory. During a
// rotation two siblings may exist: KEKFileName+".new" (the next key, written before
// the database is re-keyed) and KEKFileName+".old" (the previous key, kept until no
// stored value needs it).
const KEKFileName = "kek.key"

// ParseKEK reads a key-encryption key written as 64 hex digits (Kiln's format, what
// `openssl rand -hex 32` prints) or as base64 of 32 bytes; surrounding white space is
// ignored. It accepts what internal/enroll accepts: both read the same file.
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

// KEKID names a key without revealing it: the first 8 bytes of SHA-256 over
// "kiln-kek-id:" and the key, in hex (the same id internal/enroll reports).
func KEKID(kek []byte) string {
	h := sha256.Sum256(append([]byte("kiln-kek-id:"), kek...))
	return hex.EncodeToString(h[:8])
}

// LoadOrCreateKEK reads the key-encryption key at path. If there is no key file, a new
// random key is written there: 64 hex digits and a newline, mode 0600, created
// exclusively (two processes sharing a data directory end up with one key). A key
// file that group or others may read is refused.
//
// It refuses to create a key while a rotation's sibling files (path.new, path.old)
// exist: a missing key file then means something went wrong, and a fresh key would
// make every stored secret unreadable.
func LoadOrCreateKEK(path string) ([]byte, error) {
	k, err := readKEK(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	for _, sib := range []string{path + ".new", path + ".old"} {
		if _, err := os.Stat(sib); err == nil {
			return nil, fmt.Errorf("key-encryption key %s: missing, but %s exists (an interrupted key rotation?): restore the key file rather than create a new one", path, sib)
		}
	}
	return createKEK(path)
}

// LoadKEK reads an existing key file; the error wraps fs.ErrNotExist if there is none.
func LoadKEK(path string) ([]byte, error) { return readKEK(path) }

// readKEK reads an existing key file; the error wraps fs.ErrNotExist if there is none.
func readKEK(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key-encryption key %s: not a regular file", path)
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

func newKEK() ([]byte, error) {
	k := make([]byte, KEKSize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate a key-encryption key: %w", err)
	}
	return k, nil
}

func createKEK(path string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	k, err := newKEK()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readKEK(path) // another process created it first
	}
	if err != nil {
		return nil, fmt.Errorf("create key-encryption key: %w", err)
	}
	if err := writeAndClose(f, []byte(hex.EncodeToString(k)+"\n")); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("write key-encryption key %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	return k, nil
}

func writeAndClose(f *os.File, data []byte) error {
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeKEKFile writes a key to path atomically (a temporary file renamed over it).
func writeKEKFile(path string, k []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".kek-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := writeAndClose(tmp, []byte(hex.EncodeToString(k)+"\n")); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// kek is one loaded key-encryption key.
type kek struct {
	id   string
	raw  []byte
	aead cipher.AEAD
}

func newKEKEntry(raw []byte) (*kek, error) {
	if len(raw) != KEKSize {
		return nil, fmt.Errorf("key-encryption key: %d bytes, want %d", len(raw), KEKSize)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &kek{id: KEKID(raw), raw: append([]byte(nil), raw...), aead: aead}, nil
}

// KeyRing holds the current key-encryption key, with which new data keys are wrapped,
// and any other keys stored values may still be wrapped with (the previous or next key
// of an interrupted rotation). Values are unwrapped with the key their row names.
type KeyRing struct {
	// path is the current key's file; "" for a ring built in memory (no rotation).
	path string

	mu      sync.RWMutex
	current *kek
	others  map[string]*kek
}

// NewKeyRing builds a ring in memory: the first key is the current one. A ring built
// this way cannot rotate its key (it has no file to replace).
func NewKeyRing(current []byte, others ...[]byte) (*KeyRing, error) {
	c, err := newKEKEntry(current)
	if err != nil {
		return nil, err
	}
	r := &KeyRing{current: c, others: map[string]*kek{}}
	for _, o := range others {
		e, err := newKEKEntry(o)
		if err != nil {
			return nil, err
		}
		if e.id != c.id {
			r.others[e.id] = e
		}
	}
	return r, nil
}

// LoadKeyRing loads (or, on first start, creates) the key file at path, with its
// rotation siblings path.new and path.old when present.
func LoadKeyRing(path string) (*KeyRing, error) {
	cur, err := LoadOrCreateKEK(path)
	if err != nil {
		return nil, err
	}
	var others [][]byte
	for _, sib := range []string{path + ".new", path + ".old"} {
		k, err := readKEK(sib)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		others = append(others, k)
	}
	r, err := NewKeyRing(cur, others...)
	if err != nil {
		return nil, err
	}
	r.path = path
	return r, nil
}

// CurrentID is the id of the key new values are wrapped with.
func (r *KeyRing) CurrentID() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.current.id
}

// CurrentKey returns a copy of the current key, for other services that seal with the
// same key-encryption key (the enrollment CA): load the ring once (LoadKeyRing, then
// Service.Reconcile, which finishes an interrupted rotation) and hand them this.
func (r *KeyRing) CurrentKey() []byte {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return bytes.Clone(r.current.raw)
}

// IDs lists every loaded key's id, the current one first.
func (r *KeyRing) IDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]string{r.current.id}, slices.Sorted(maps.Keys(r.others))...)
}

func (r *KeyRing) lookup(id string) (*kek, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.current.id == id {
		return r.current, true
	}
	k, ok := r.others[id]
	return k, ok
}

func (r *KeyRing) currentKEK() *kek {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.current
}

// add puts a key in the ring (not as the current one).
func (r *KeyRing) add(k *kek) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k.id != r.current.id {
		r.others[k.id] = k
	}
}

// promote makes a loaded key the current one; the previous one stays in the ring.
func (r *KeyRing) promote(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.others[id]
	if !ok {
		return
	}
	delete(r.others, id)
	r.others[r.current.id] = r.current
	r.current = k
}

// forget drops a key that is not the current one.
func (r *KeyRing) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id != r.current.id {
		delete(r.others, id)
	}
}
