package secrets

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestKEKFileWriteErrors: a key file write that cannot be made durable is an
// error: writeAndClose on a file that accepts the bytes but not fsync (a pipe)
// reports the fsync failure, after writing everything; writeKEKFile whose rename
// cannot replace the target (a directory in the way) reports it and leaves the
// target alone.
func TestKEKFileWriteErrors(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := []byte("00112233\n")
	if err := writeAndClose(w, data); err == nil {
		t.Error("writeAndClose on a pipe: no error, want fsync's")
	}
	got, _ := io.ReadAll(r)
	if !bytes.Equal(got, data) {
		t.Errorf("written %q, want %q", got, data)
	}

	dir := t.TempDir()
	target := filepath.Join(dir, "kek.key")
	if err := os.MkdirAll(filepath.Join(target, "in-the-way"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeKEKFile(target, make([]byte, KEKSize)); err == nil {
		t.Error("writeKEKFile over a non-empty directory: no error")
	}
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		t.Errorf("the target after a failed write: %v, %v; want the directory still there", fi, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".kek-*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
}
