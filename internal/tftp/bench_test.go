package tftp

import (
	"io"
	"strconv"
	"testing"
	"time"
)

// BenchmarkTransfer1MiB measures a whole 1 MiB download over loopback with the
// in-process client at blksize 1468, lock-step and with a window of 16.
func BenchmarkTransfer1MiB(b *testing.B) {
	data := testData(1<<20, 42)
	for _, window := range []int{1, 16} {
		b.Run("windowsize="+strconv.Itoa(window), func(b *testing.B) {
			m := new(Metrics)
			addr := startServer(b, &Server{Handler: &memHandler{files: map[string][]byte{"f": data}}, Metrics: m})
			o := getOpts{options: opts("blksize", "1468", "windowsize", strconv.Itoa(window)), w: io.Discard}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				ctx := testCtx(b, 30*time.Second)
				res, err := tftpGet(ctx, addr, "f", o)
				if err != nil {
					b.Fatal(err)
				}
				if res.blocks != uint64(len(data)/1468+1) {
					b.Fatalf("%d blocks", res.blocks)
				}
			}
			b.StopTimer()
			if r := m.Retransmits.Load(); r != 0 {
				b.Logf("%d retransmissions", r)
			}
		})
	}
}
