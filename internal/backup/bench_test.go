package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// BenchmarkCreate measures kiln backup of a store with 10,000 and 100,000
// machines (the snapshot, hashing and the gzip'd archive), reporting the
// database's and the archive's sizes.
func BenchmarkCreate(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		dir := filepath.Join(b.TempDir(), "data")
		st, err := sqlite.Open(context.Background(), dir, sqlstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		storetest.Populate(b, st, n)
		st.Close()
		fi, err := os.Stat(filepath.Join(dir, DatabaseName))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("machines=%d", n), func(b *testing.B) {
			var size int
			for range b.N {
				var buf bytes.Buffer
				if _, err := Create(context.Background(), &buf, Options{DataDir: dir}); err != nil {
					b.Fatal(err)
				}
				size = buf.Len()
			}
			b.ReportMetric(float64(fi.Size())/(1<<20), "db-MiB")
			b.ReportMetric(float64(size)/(1<<20), "archive-MiB")
		})
	}
}
