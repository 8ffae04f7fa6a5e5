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
	"github.com/kilnhq/kiln/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Reopenable(
		func(t *testing.T) string { return pgtest.NewDatabase(t) },
		func(t *testing.T, url string) store.Store { return testkit.OpenPostgres(t, url) },
	))
}

// Two stores on one database stand for two replicas: their writers are serialized too.
func TestReplicasShareTheWriteLock(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := testkit.OpenPostgres(t, url), testkit.OpenPostgres(t, url)
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
