package secrets

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/store"
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

// TestFailedRotationRemovesNextKey: a rotation that fails after writing the next
// key file removes that file (the key it holds protects nothing) without a
// warning; a removal that fails is warned about.
func TestFailedRotationRemovesNextKey(t *testing.T) {
	e := newFleet(t)
	e.svc.RotationHooks = []RotationHook{func(context.Context, store.Tx, []byte, []byte) (func(), error) {
		return nil, errors.New("CA key busy")
	}}
	if _, err := e.svc.RotateKEK(context.Background(), admin); err == nil || !strings.Contains(err.Error(), "CA key busy") {
		t.Fatalf("rotation with a failing hook: %v", err)
	}
	if _, err := os.Stat(e.kekPath + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the next key file after a failed rotation: %v, want removed", err)
	}
	if logs := e.logs.String(); strings.Contains(logs, "remove the unused next key file") {
		t.Errorf("a warning although the file was removed:\n%s", logs)
	}

	// The next key file replaced by a non-empty directory: it cannot be removed.
	e.svc.RotationHooks = []RotationHook{func(context.Context, store.Tx, []byte, []byte) (func(), error) {
		if err := os.Remove(e.kekPath + ".new"); err != nil {
			t.Error(err)
		}
		if err := os.MkdirAll(filepath.Join(e.kekPath+".new", "x"), 0o700); err != nil {
			t.Error(err)
		}
		return nil, errors.New("CA key busy")
	}}
	if _, err := e.svc.RotateKEK(context.Background(), admin); err == nil {
		t.Fatal("rotation with a failing hook succeeded")
	}
	if logs := e.logs.String(); !strings.Contains(logs, "remove the unused next key file") {
		t.Errorf("no warning about the next key file left:\n%s", logs)
	}
}
