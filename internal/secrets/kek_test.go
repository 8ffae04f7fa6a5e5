package secrets

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/store"
)

func TestLoadOrCreateKEK(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, KEKFileName)
	k, err := LoadOrCreateKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	data, _ := os.ReadFile(path)
	if string(data) != hex.EncodeToString(k)+"\n" {
		t.Fatalf("key file is %q, want 64 hex digits and a newline", data)
	}
	again, err := LoadOrCreateKEK(path)
	if err != nil || !bytes.Equal(again, k) {
		t.Fatalf("second load: %v", err)
	}
	// Group- or world-readable: refused.
	os.Chmod(path, 0o640)
	if _, err := LoadOrCreateKEK(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("readable key file: %v", err)
	}
	os.Chmod(path, 0o600)
	// Garbage: refused, never replaced.
	os.WriteFile(path, []byte("not a key\n"), 0o600)
	if _, err := LoadOrCreateKEK(path); err == nil {
		t.Fatal("a malformed key file was accepted")
	}
	// Missing while a rotation's sibling exists: refused, not recreated.
	os.Remove(path)
	os.WriteFile(path+".new", []byte(hex.EncodeToString(k)+"\n"), 0o600)
	if _, err := LoadOrCreateKEK(path); err == nil || !strings.Contains(err.Error(), "interrupted key rotation") {
		t.Fatalf("missing key with a .new sibling: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a key was created beside a rotation's file")
	}
}

func TestParseKEK(t *testing.T) {
	k := bytes.Repeat([]byte{0xab}, KEKSize)
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{hex.EncodeToString(k), true},
		{hex.EncodeToString(k) + "\n", true},
		{"  " + hex.EncodeToString(k) + "\r\n", true},
		{base64.StdEncoding.EncodeToString(k), true},
		{base64.RawURLEncoding.EncodeToString(k), true},
		{hex.EncodeToString(k[:31]), false},
		{strings.Repeat("z", 64), false},
		{"", false},
	} {
		got, err := ParseKEK(tc.in)
		if (err == nil) != tc.ok || (tc.ok && !bytes.Equal(got, k)) {
			t.Errorf("ParseKEK(%q) = %x, %v; want ok=%v", tc.in, got, err, tc.ok)
		}
	}
	// The id is the one internal/enroll reports for the same key file.
	h := sha256.Sum256(append([]byte("kiln-kek-id:"), k...))
	if KEKID(k) != hex.EncodeToString(h[:8]) {
		t.Fatal("KEKID changed")
	}
}

func TestEnvelope(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, KEKSize), bytes.Repeat([]byte{2}, KEKSize)
	ring, err := NewKeyRing(k1)
	if err != nil {
		t.Fatal(err)
	}
	v := &store.SecretVersion{Name: "db", Version: 3}
	if err := ring.seal(v, []byte("s3cret")); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(v.Ciphertext, []byte("s3cret")) || v.KEKID != KEKID(k1) {
		t.Fatalf("sealed: %+v", v)
	}
	got, err := ring.open(v)
	if err != nil || string(got) != "s3cret" {
		t.Fatalf("open: %q %v", got, err)
	}
	// Any change is detected: the ciphertext, the wrapped key, the name or version it
	// is bound to.
	for name, mutate := range map[string]func(v *store.SecretVersion){
		"ciphertext":  func(v *store.SecretVersion) { v.Ciphertext[0] ^= 1 },
		"wrapped key": func(v *store.SecretVersion) { v.WrappedDEK[len(v.WrappedDEK)-1] ^= 1 },
		"nonce":       func(v *store.SecretVersion) { v.Nonce[0] ^= 1 },
		"short nonce": func(v *store.SecretVersion) { v.Nonce = v.Nonce[:4] },
		"short key":   func(v *store.SecretVersion) { v.WrappedDEK = v.WrappedDEK[:8] },
		"other name":  func(v *store.SecretVersion) { v.Name = "api" },
		"other ver":   func(v *store.SecretVersion) { v.Version = 2 },
	} {
		c := *v
		c.Ciphertext = bytes.Clone(v.Ciphertext)
		c.WrappedDEK = bytes.Clone(v.WrappedDEK)
		c.Nonce = bytes.Clone(v.Nonce)
		mutate(&c)
		if _, err := ring.open(&c); err == nil {
			t.Errorf("%s changed: still opens", name)
		}
	}
	// Another key: not loaded, said so; loaded but wrong: refused.
	other, _ := NewKeyRing(k2)
	if _, err := other.open(v); !errors.Is(err, ErrKeyUnavailable) {
		t.Fatalf("open with another ring: %v", err)
	}
	liar := *v
	liar.KEKID = KEKID(k2)
	if _, err := other.open(&liar); err == nil || errors.Is(err, ErrKeyUnavailable) {
		t.Fatalf("a row claiming the wrong key: %v", err)
	}
	// Re-wrapping keeps the value.
	both, _ := NewKeyRing(k1, k2)
	to, _ := both.lookup(KEKID(k2))
	w, err := both.rewrap(v, to)
	if err != nil {
		t.Fatal(err)
	}
	moved := *v
	moved.KEKID, moved.WrappedDEK = to.id, w
	if got, err := other.open(&moved); err != nil || string(got) != "s3cret" {
		t.Fatalf("open after re-wrap: %q %v", got, err)
	}
}

func TestReconcileRefusesTheWrongKey(t *testing.T) {
	e := newEnv(t)
	e.set("db", "v")
	// Another key file: the store's secrets cannot be read with it.
	os.Remove(e.kekPath)
	keys, err := LoadKeyRing(e.kekPath)
	if err != nil {
		t.Fatal(err)
	}
	svc := &Service{Store: e.store, Keys: keys}
	if err := svc.Reconcile(context.Background()); !errors.Is(err, ErrKeyUnavailable) {
		t.Fatalf("reconcile with the wrong key: %v", err)
	}
	if _, err := svc.Set(context.Background(), admin, "db", []byte("w")); !errors.Is(err, ErrKeyUnavailable) {
		t.Fatalf("set with the wrong key: %v", err)
	}
}
