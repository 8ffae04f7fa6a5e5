package sqlite_test

import (
	"testing"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func openBench(b *testing.B) store.Store {
	st := openAt(b, b.TempDir())
	b.Cleanup(func() { st.Close() })
	return st
}

func BenchmarkLookupMAC(b *testing.B)    { storetest.BenchLookupMAC(b, openBench) }
func BenchmarkListMachines(b *testing.B) { storetest.BenchListMachines(b, openBench) }
func BenchmarkAppendAudit(b *testing.B)  { storetest.BenchAppendAudit(b, openBench) }
