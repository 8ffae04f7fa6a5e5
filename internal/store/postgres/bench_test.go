package postgres_test

import (
	"testing"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/testkit"
)

func openBench(b *testing.B) store.Store { return testkit.OpenPostgres(b, pgtest.NewDatabase(b)) }

func BenchmarkLookupMAC(b *testing.B)    { storetest.BenchLookupMAC(b, openBench) }
func BenchmarkListMachines(b *testing.B) { storetest.BenchListMachines(b, openBench) }
