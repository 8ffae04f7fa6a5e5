package testkit

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/apitoken"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

// OpenSQLite opens (creating it if needed) a SQLite store in dir; it is closed
// when tb ends. Closing it earlier is allowed, e.g. to reopen the same dir.
func OpenSQLite(tb testing.TB, dir string) store.Store {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), dir, sqlstore.Options{})
	if err != nil {
		tb.Fatalf("open SQLite store in %s: %v", dir, err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// OpenPostgres opens a PostgreSQL store at url (pgtest.NewDatabase gives one); it
// is closed when tb ends.
func OpenPostgres(tb testing.TB, url string) store.Store {
	tb.Helper()
	st, err := postgres.Open(context.Background(), url, sqlstore.Options{})
	if err != nil {
		tb.Fatalf("open PostgreSQL store: %v", err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// Env is a store with its data dir and the inventory service over it.
type Env struct {
	Dir   string
	Store store.Store
	Inv   *inventory.Service
}

// NewStore is a fresh SQLite store in a temporary data dir with the manifests
// (YAML documents, as `kiln apply -f` reads them) applied through the inventory
// service, as an operator would have.
func NewStore(tb testing.TB, manifests ...string) *Env {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "data")
	st := OpenSQLite(tb, dir)
	e := &Env{Dir: dir, Store: st, Inv: &inventory.Service{Store: st}}
	e.Apply(tb, manifests...)
	return e
}

// Apply parses and applies manifests in one batch, failing tb on any error.
func (e *Env) Apply(tb testing.TB, manifests ...string) []inventory.Result {
	tb.Helper()
	if len(manifests) == 0 {
		return nil
	}
	res, err := Apply(context.Background(), e.Inv, manifests...)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// Apply parses manifests and applies them with inv, recorded in the audit log as
// the actor "test".
func Apply(ctx context.Context, inv *inventory.Service, manifests ...string) ([]inventory.Result, error) {
	objs, err := resource.ParseManifests(strings.NewReader(strings.Join(manifests, "\n---\n")), "testkit")
	if err != nil {
		return nil, err
	}
	return inv.Apply(ctx, inventory.Actor{ID: "test"}, objs)
}

// APIToken creates an API token with role in st and returns the token itself, as
// `kiln api-token create` would.
func APIToken(tb testing.TB, st store.Store, role, name string) string {
	tb.Helper()
	tok, rec, err := apitoken.New(role, name, time.Now())
	if err != nil {
		tb.Fatalf("new %s token %q: %v", role, name, err)
	}
	ctx := context.Background()
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.CreateAPIToken(ctx, rec) }); err != nil {
		tb.Fatalf("store %s token %q: %v", role, name, err)
	}
	return tok
}
