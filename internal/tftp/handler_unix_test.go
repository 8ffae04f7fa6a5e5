//go:build unix

package tftp

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A FIFO must be refused without blocking in open(2).
func TestDirHandlerFIFO(t *testing.T) {
	root := t.TempDir()
	must(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	done := make(chan error, 1)
	go func() {
		_, _, err := DirHandler(root, nil).ServeTFTP(context.Background(), Request{Filename: "fifo"})
		done <- err
	}()
	select {
	case err := <-done:
		if code, _ := toWireError(err); code != ErrCodeAccessViolation {
			t.Errorf("fifo: %v (code %d)", err, code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeTFTP blocked on a FIFO")
	}
}
