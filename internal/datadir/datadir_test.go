package datadir_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kilnhq/kiln/internal/datadir"
)

// TestSecure: too-open directories and files are made 0700/0600 and reported;
// private ones, the skipped artifact subtree and symbolic links' targets are left
// alone.
func TestSecure(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "outside")
	write := func(p string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(p, []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o755)
	write(filepath.Join(dir, "kek.key"), 0o640)
	write(filepath.Join(dir, "private"), 0o600)
	write(filepath.Join(dir, "readonly"), 0o444)
	os.Mkdir(filepath.Join(dir, "artifacts"), 0o755)
	write(filepath.Join(dir, "artifacts", "vmlinuz"), 0o644)
	write(outside, 0o644)
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	fixed, err := datadir.Secure(dir, filepath.Join(dir, "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(fixed)
	want := []string{dir, filepath.Join(dir, "kek.key"), filepath.Join(dir, "readonly")}
	if !slices.Equal(fixed, want) {
		t.Errorf("fixed %v, want %v", fixed, want)
	}
	for p, mode := range map[string]os.FileMode{
		dir: 0o700, filepath.Join(dir, "kek.key"): 0o600, filepath.Join(dir, "private"): 0o600,
		filepath.Join(dir, "readonly"): 0o400, filepath.Join(dir, "artifacts", "vmlinuz"): 0o644, outside: 0o644,
	} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: %o, want %o", p, st.Mode().Perm(), mode)
		}
	}
	if fixed, err := datadir.Secure(dir); err != nil || len(fixed) != 2 { // now the artifacts dir and its file too
		t.Errorf("second pass without the skip: %v %v", fixed, err)
	}
}

// TestSecureWhileFilesComeAndGo: files created and renamed away while Secure
// walks (the audit head's temporary file while the server starts) are not an
// error: a file that is no longer there exposes nothing. A missing root is.
func TestSecureWhileFilesComeAndGo(t *testing.T) {
	dir := t.TempDir()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100000; i++ { // bounded; stopped as soon as the walks end
			select {
			case <-stop:
				return
			default:
			}
			p := filepath.Join(dir, fmt.Sprintf(".tmp-%d", i%64))
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Error(err)
				return
			}
			os.Rename(p, filepath.Join(dir, "head"))
		}
	}()
	for i := 0; i < 300; i++ {
		if _, err := datadir.Secure(dir); err != nil {
			t.Errorf("walk %d: %v", i, err)
			break
		}
	}
	close(stop)
	<-done
	if _, err := datadir.Secure(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing data dir: no error")
	}
}
