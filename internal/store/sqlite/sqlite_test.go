package sqlite_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/testkit"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Reopenable(
		func(t *testing.T) string { return filepath.Join(t.TempDir(), "data") },
		func(t *testing.T, dir string) store.Store { return testkit.OpenSQLite(t, dir) },
	))
}

func TestOpenCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	st := testkit.OpenSQLite(t, dir)
	defer st.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %v, want 0700", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, sqlite.FileName)); err != nil {
		t.Errorf("database file: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := sqlite.Open(ctx, "", sqlstore.Options{}); err == nil {
		t.Error("empty data directory: no error")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Open(ctx, file, sqlstore.Options{}); err == nil {
		t.Error("data directory is a file: no error")
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	st := testkit.OpenSQLite(t, dir)
	db := st.(*sqlstore.Store).DB()
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 0)`); err != nil {
		t.Fatal(err)
	}
	st.Close()
	_, err := sqlite.Open(context.Background(), dir, sqlstore.Options{})
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("open a database from a newer Kiln: %v", err)
	}
}

func TestMigrationsApplyOnce(t *testing.T) {
	dir := t.TempDir()
	for range 3 {
		st := testkit.OpenSQLite(t, dir)
		var n int
		if err := st.(*sqlstore.Store).DB().QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		want, _ := fs.Glob(sqlite.Dialect().Migrations, "*.sql")
		if n != len(want) || n < 2 {
			t.Fatalf("%d migration rows, want %d (one per migration file)", n, len(want))
		}
		st.Close()
	}
}

func TestObserve(t *testing.T) {
	var updates, views atomic.Int64
	st, err := sqlite.Open(context.Background(), t.TempDir(), sqlstore.Options{Observe: func(op string, d time.Duration) {
		if d <= 0 {
			t.Errorf("%s: duration %v", op, d)
		}
		switch op {
		case "update":
			updates.Add(1)
		case "view":
			views.Add(1)
		default:
			t.Errorf("unexpected op %q", op)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	_ = st.Update(ctx, func(store.Tx) error { return nil })
	_ = st.View(ctx, func(store.Tx) error { return nil })
	_ = st.View(ctx, func(store.Tx) error { return nil })
	if updates.Load() != 1 || views.Load() != 2 {
		t.Errorf("observed %d updates and %d views, want 1 and 2", updates.Load(), views.Load())
	}
}

func TestWritesDoNotBlockReads(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	defer st.Close()
	ctx := context.Background()
	storetest.Populate(t, st, 10)
	hold := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- st.Update(ctx, func(tx store.Tx) error {
			if err := tx.Create(ctx, storetest.Machine(10)); err != nil {
				return err
			}
			<-hold
			return nil
		})
	}()
	time.Sleep(50 * time.Millisecond) // let the writer take the lock
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := st.View(vctx, func(tx store.Tx) error {
		_, err := tx.LookupKey(vctx, "Machine", "mac:"+storetest.MAC(3))
		return err
	})
	close(hold)
	if err != nil {
		t.Fatalf("read during a write: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Two stores on one file (as two processes would be): writers are still serialized,
// by SQLite's lock.
func TestTwoStoresOnOneFile(t *testing.T) {
	dir := t.TempDir()
	a, b := testkit.OpenSQLite(t, dir), testkit.OpenSQLite(t, dir)
	defer a.Close()
	defer b.Close()
	storetest.RunConcurrent(t, []store.Store{a, b})
}
