package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

// TestFilesPrivateWhateverUmask: under umask 022, the database and the WAL and
// shared-memory files SQLite creates beside it are 0600, and a kiln.db left 0644
// by someone else is made 0600 when opened.
func TestFilesPrivateWhateverUmask(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, preexisting := range []bool{false, true} {
		dir := t.TempDir()
		if preexisting {
			if err := os.WriteFile(filepath.Join(dir, sqlite.FileName), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ctx := context.Background()
		st, err := sqlite.Open(ctx, dir, sqlstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Update(ctx, func(tx store.Tx) error {
			_, err := tx.ListAPITokens(ctx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{sqlite.FileName, sqlite.FileName + "-wal", sqlite.FileName + "-shm"} {
			st, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatalf("preexisting %v: %v", preexisting, err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("preexisting %v: %s is %o, want 600", preexisting, name, st.Mode().Perm())
			}
		}
		st.Close()
	}
}
