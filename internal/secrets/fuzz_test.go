package secrets

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseHandleID: any string either parses to a 64-hex-digit hash or is
// ErrBadHandle; a parsed id is 43 base64url characters; nothing panics.
func FuzzParseHandleID(f *testing.F) {
	id, _, _ := newHandleID()
	for _, s := range []string{id, "", "short", strings.Repeat("A", 43), strings.Repeat("A", 42) + "B",
		strings.Repeat("_", 43), strings.Repeat("=", 43), "MASKED-HANDLE-db", id + "/status", "../../etc/passwd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hash, err := ParseHandleID(s)
		if err != nil {
			if !errors.Is(err, ErrBadHandle) {
				t.Fatalf("error %v is not ErrBadHandle", err)
			}
			return
		}
		if len(s) != handleIDLen || len(hash) != 64 || strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			t.Fatalf("accepted %q -> %q", s, hash)
		}
		if again, _ := ParseHandleID(s); again != hash {
			t.Fatal("not deterministic")
		}
	})
}

// FuzzParseKEK: a key file's content parses to 32 bytes or is refused.
func FuzzParseKEK(f *testing.F) {
	for _, s := range []string{"", strings.Repeat("ab", 32) + "\n", strings.Repeat("A", 44), "zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKEK(s)
		if err == nil && len(k) != KEKSize {
			t.Fatalf("%d-byte key from %q", len(k), s)
		}
	})
}
