package open

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

func TestOpenSQLite(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	other := filepath.Join(t.TempDir(), "other")
	for _, tc := range []struct{ url, dir string }{
		{"", dataDir},
		{"sqlite://", dataDir},
		{"SQLITE://", dataDir},
		{"sqlite://" + other, other},
	} {
		st, err := Open(ctx, dataDir, tc.url, sqlstore.Options{})
		if err != nil {
			t.Fatalf("Open(%q): %v", tc.url, err)
		}
		if err := st.Ping(ctx); err != nil {
			t.Errorf("Open(%q): ping: %v", tc.url, err)
		}
		st.Close()
		if _, err := os.Stat(filepath.Join(tc.dir, sqlite.FileName)); err != nil {
			t.Errorf("Open(%q): %v", tc.url, err)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ url, want string }{
		{"mysql://u:secret@h/db", `scheme "mysql" is not supported`},
		{"sqlite://relative/dir", "sqlite:///absolute/dir"},
		{"u:secret@localhost/db", "expected postgres://"},
		{"postgres://u:secret@%zz/db", "postgres"},
	} {
		st, err := Open(ctx, t.TempDir(), tc.url, sqlstore.Options{})
		if err == nil {
			st.Close()
			t.Errorf("Open(%q): no error", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): %v, want it to say %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q): the error shows the password: %v", tc.url, err)
		}
	}
}
