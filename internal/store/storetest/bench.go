package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

// BenchLookupMAC measures the DHCP hot path: a View with one LookupKey of a random
// machine's MAC, with 100 and 100,000 machines stored (sub-benchmarks machines=N).
// open(b) must return a store on an empty database, closed when b ends.
func BenchLookupMAC(b *testing.B, open func(b *testing.B) store.Store) {
	for _, n := range []int{100, 100000} {
		st := open(b)
		Populate(b, st, n)
		b.Run(fmt.Sprintf("machines=%d", n), func(b *testing.B) {
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(1, uint64(n)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				i := rng.IntN(n)
				err := st.View(ctx, func(tx store.Tx) error {
					obj, err := tx.LookupKey(ctx, "Machine", "mac:"+MAC(i))
					if err == nil && obj.Metadata.Name != MachineName(i) {
						err = fmt.Errorf("got %s", obj.Metadata.Name)
					}
					return err
				})
				if err != nil {
					b.Fatalf("look up machine %d: %v", i, err)
				}
			}
		})
	}
}

// listBudget bounds the time one BenchListMachines run may take. A full list of
// 100,000 machines takes a fraction of a second, so a fixed count such as
// -benchtime=2000x would run for many minutes; such runs are skipped, saying so.
const listBudget = 30 * time.Second

// BenchListMachines measures a View listing every machine, with 100,000 stored.
func BenchListMachines(b *testing.B, open func(b *testing.B) store.Store) {
	const n = 100000
	st := open(b)
	Populate(b, st, n)
	b.Run(fmt.Sprintf("machines=%d", n), func(b *testing.B) {
		ctx := context.Background()
		list := func() {
			err := st.View(ctx, func(tx store.Tx) error {
				objs, _, err := tx.List(ctx, "Machine", store.ListOptions{})
				if err == nil && len(objs) != n {
					err = fmt.Errorf("listed %d machines", len(objs))
				}
				return err
			})
			if err != nil {
				b.Fatalf("list: %v", err)
			}
		}
		if b.N > 1 {
			start := time.Now()
			list()
			if one := time.Since(start); one*time.Duration(b.N) > listBudget {
				b.Skipf("%d full lists would take about %v (%v each), over the %v budget: run this one with a smaller count, e.g. -bench ListMachines -benchtime=20x",
					b.N, (one * time.Duration(b.N)).Round(time.Second), one.Round(time.Millisecond), listBudget)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			list()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/machine")
	})
}
