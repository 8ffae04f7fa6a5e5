package dhcpstore

import (
	"context"
	"encoding/binary"
	"net"
	"sync/atomic"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/testkit"
)

// The peer of these benchmarks is package dhcp's BenchmarkDORAMemory, the protocol
// path alone; both run dhcptest.BenchDORA.

// BenchmarkDORASQLite is the full handler path on the embedded store: machine
// lookup by MAC, two lease transactions (offer, commit) and the encoding.
func BenchmarkDORASQLite(b *testing.B) {
	st := testkit.OpenSQLite(b, b.TempDir())
	h := storeHarness(b, st, mustSubnet(b, "bench", dhcptest.BenchSubnet()))
	dhcptest.BenchDORA(b, h.handle)
}

// benchDORAParallel is dhcptest.BenchDORA from many clients at once (the server's workers
// handling a burst): the lease store's group commit batches their writes.
func benchDORAParallel(b *testing.B, h *harness, clients int) {
	ctx := context.Background()
	var next atomic.Uint32
	b.ReportAllocs()
	b.SetParallelism(clients) // goroutines per GOMAXPROCS
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		hw := make(net.HardwareAddr, 6)
		hw[0] = 0x02
		for pb.Next() {
			binary.BigEndian.PutUint32(hw[2:], next.Add(1)%60000)
			d, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
			off := h.srv.HandlePacket(ctx, d.ToBytes(), h.in)
			if off == nil {
				b.Error("no offer")
				return
			}
			r, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(off.Msg.YourIPAddr)),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP{10, 0, 0, 1})))
			if ack := h.srv.HandlePacket(ctx, r.ToBytes(), h.in); ack == nil || ack.Msg.MessageType() != dhcpv4.MessageTypeAck {
				b.Error("no ack")
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "leases/s")
}

// BenchmarkDORASQLiteParallel: 64 clients at once per core on the embedded store;
// leases/s shows the group commit (compare BenchmarkDORASQLite, one client).
func BenchmarkDORASQLiteParallel(b *testing.B) {
	st := testkit.OpenSQLite(b, b.TempDir())
	h := storeHarness(b, st, mustSubnet(b, "bench", dhcptest.BenchSubnet()))
	benchDORAParallel(b, h, 64)
	if sl, ok := h.srv.Leases.(*Leases); ok && sl.batches.Load() > 0 {
		b.ReportMetric(float64(sl.batched.Load())/float64(sl.batches.Load()), "ops/tx")
	}
}
