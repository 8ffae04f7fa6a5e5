package postgres_test

import (
	"context"
	"os"
	"testing"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func openAt(tb testing.TB, url string) store.Store {
	tb.Helper()
	st, err := postgres.Open(context.Background(), url, sqlstore.Options{})
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	return st
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Reopenable(
		func(t *testing.T) string { return pgtest.NewDatabase(t) },
		func(t *testing.T, url string) store.Store { return openAt(t, url) },
	))
}

// Two stores on one database stand for two replicas: their writers are serialized too.
func TestReplicasShareTheWriteLock(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := openAt(t, url), openAt(t, url)
	defer a.Close()
	defer b.Close()
	storetest.RunConcurrent(t, []store.Store{a, b})
}

// Replicas starting together on an empty database migrate it once.
func TestConcurrentMigrations(t *testing.T) {
	url := pgtest.NewDatabase(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			st, err := postgres.Open(context.Background(), url, sqlstore.Options{})
			if err == nil {
				st.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
