package server

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDataDirModesAfterStart: a data directory made by packaging (0755) holding a
// kiln.db created under umask 022 (0644) ends up, after `kiln serve` starts, with
// every file 0600 and every directory 0700: the sealed CA key, secrets'
// ciphertexts, token hashes and facts are not world-readable.
func TestDataDirModesAfterStart(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "kiln")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kiln.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "leftover"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "leftover", "notes"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Write something so the WAL and shared-memory files exist.
	if err := s.bootstrapAdmin(ctx); err != nil {
		t.Fatal(err)
	}
	checkModes(t, dir)
	s.listener.Close()
	if err := s.store.Close(); err != nil {
		t.Fatal(err)
	}
}

func checkModes(t *testing.T, dir string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(path)
		if err != nil {
			return err
		}
		seen[filepath.Base(path)] = true
		switch {
		case st.IsDir() && st.Mode().Perm() != 0o700:
			t.Errorf("%s: directory mode %o, want 700", path, st.Mode().Perm())
		case st.Mode().IsRegular() && st.Mode().Perm() != 0o600:
			t.Errorf("%s: file mode %o, want 600", path, st.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"kiln.db", "kiln.db-wal", "kiln.db-shm", "kek.key", "admin.token", ServerURLFile} {
		if !seen[f] {
			t.Errorf("%s not in the data dir: the test checked less than it means to", f)
		}
	}
}
