package dhcp

import (
	"context"
	"encoding/binary"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/resource"
)

// benchDORA runs one DISCOVER→OFFER→REQUEST→ACK exchange per iteration through
// HandlePacket, each for a new client (MACs wrap around after 60,000, when the
// clients come back to their leases).
func benchDORA(b *testing.B, h *harness) {
	ctx := context.Background()
	hw := make(net.HardwareAddr, 6)
	hw[0] = 0x02
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		binary.BigEndian.PutUint32(hw[2:], uint32(i%60000))
		d, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
		off := h.srv.HandlePacket(ctx, d.ToBytes(), h.in)
		if off == nil {
			b.Fatalf("no offer for client %d", i)
		}
		r, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(off.Msg.YourIPAddr)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP{10, 0, 0, 1})))
		if ack := h.srv.HandlePacket(ctx, r.ToBytes(), h.in); ack == nil || ack.Msg.MessageType() != dhcpv4.MessageTypeAck {
			b.Fatalf("no ack for client %d", i)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "leases/s")
}

func benchSubnet(b *testing.B) *Subnet {
	return mustSubnet(b, "bench", resource.SubnetSpec{CIDR: "10.0.0.0/16", Pools: []resource.Pool{{Start: "10.0.1.0", End: "10.0.255.250"}},
		Router: "10.0.0.1", DNS: []string{"10.0.0.1"}, LeaseTime: "1h", UnknownMachines: resource.UnknownAllocate})
}

// BenchmarkDORAMemory is the protocol path alone, on MemoryLeases.
func BenchmarkDORAMemory(b *testing.B) {
	h := newHarness(b, fakeMachines{}, benchSubnet(b))
	benchDORA(b, h)
}
