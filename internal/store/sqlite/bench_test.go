package sqlite_test

import (
	"testing"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/testkit"
)

func openBench(b *testing.B) store.Store { return testkit.OpenSQLite(b, b.TempDir()) }

func BenchmarkLookupMAC(b *testing.B)    { storetest.BenchLookupMAC(b, openBench) }
func BenchmarkListMachines(b *testing.B) { storetest.BenchListMachines(b, openBench) }
func BenchmarkAppendAudit(b *testing.B)  { storetest.BenchAppendAudit(b, openBench) }
