// Package dhcptest is what the tests of internal/dhcp and internal/dhcp/dhcpstore
// share: client messages built the way DHCP clients build them, the lab subnet the
// handler tests run on, and the DORA benchmark loop that measures both the
// in-memory and the store-backed seams the same way.
//
// It does not import internal/dhcp, so that package dhcp's own (internal) tests can
// import it without an import cycle; what needs dhcp's types (the harness around a
// dhcp.Server) stays in each package's tests. It is imported by _test.go files only.
package dhcptest

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/kilnhq/kiln/internal/resource"
)

// ServerIP is the server's address on the lab subnet (option 54 of its replies).
const ServerIP = "10.0.0.1"

// LabSubnet is the subnet the handler tests run on: full mode, ten addresses.
// Each call returns a new spec, so a test may change its copy.
func LabSubnet() resource.SubnetSpec {
	return resource.SubnetSpec{
		CIDR: "10.0.0.0/24", Mode: resource.ModeFull,
		Pools:  []resource.Pool{{Start: "10.0.0.100", End: "10.0.0.109"}},
		Router: ServerIP, DNS: []string{"10.0.0.53", "10.0.0.54"}, Domain: "lab.example",
		LeaseTime: "2h", MTU: 1500, UnknownMachines: resource.UnknownAllocate,
	}
}

// BenchSubnet is the subnet of the DORA benchmarks: a /16 with room for the
// 60,000 clients BenchDORA cycles through.
func BenchSubnet() resource.SubnetSpec {
	return resource.SubnetSpec{CIDR: "10.0.0.0/16", Pools: []resource.Pool{{Start: "10.0.1.0", End: "10.0.255.250"}},
		Router: ServerIP, DNS: []string{ServerIP}, LeaseTime: "1h", UnknownMachines: resource.UnknownAllocate}
}

// MAC parses a MAC address that the test wrote, panicking on a typo.
func MAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

// Msg is a client's message of type mt from hw, broadcast flag set as most
// firmware sets it, with mods applied.
func Msg(tb testing.TB, hw string, mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	tb.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(MAC(hw)), dhcpv4.WithMessageType(mt), dhcpv4.WithBroadcast(true),
	}, mods...)...)
	if err != nil {
		tb.Fatalf("new %s from %s: %v", mt, hw, err)
	}
	return m
}

// WithRequested sets option 50, the requested address.
func WithRequested(ip string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip)))
}

// WithServerID sets option 54, the server the client chose.
func WithServerID(ip string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(ip)))
}

// WithCiaddr sets ciaddr, as a renewing or releasing client does.
func WithCiaddr(ip string) dhcpv4.Modifier { return dhcpv4.WithClientIP(net.ParseIP(ip)) }

// WithArch sets option 93, the client's architecture.
func WithArch(a iana.Arch) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptClientArch(a)) }

// WithVendor sets option 60, the vendor class ("PXEClient:...", "HTTPClient:...").
func WithVendor(v string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptClassIdentifier(v))
}

// WithIPXE sets option 77 the way iPXE does: the bare string, not RFC 3004.
func WithIPXE() dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))
}

// Handle answers one packet, as a server's HandlePacket does on a fixed inbound
// interface: the reply's message, or nil when there is none.
type Handle func(ctx context.Context, packet []byte) *dhcpv4.DHCPv4

// DORA runs DISCOVER and REQUEST for the client hw through handle and returns the
// ACK, failing tb when an answer is missing or does not decode again (what goes on
// the wire must).
func DORA(tb testing.TB, handle Handle, hw string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	tb.Helper()
	exchange := func(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
		tb.Helper()
		r := handle(context.Background(), m.ToBytes())
		if r != nil {
			if _, err := dhcpv4.FromBytes(r.ToBytes()); err != nil {
				tb.Fatalf("reply does not decode: %v", err)
			}
		}
		return r
	}
	off := exchange(Msg(tb, hw, dhcpv4.MessageTypeDiscover, mods...))
	if off == nil {
		tb.Fatalf("%s: no offer", hw)
	}
	ip := off.YourIPAddr.String()
	ack := exchange(Msg(tb, hw, dhcpv4.MessageTypeRequest, append(mods, WithRequested(ip), WithServerID(ServerIP))...))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		tb.Fatalf("%s: no ACK for %s: %v", hw, ip, ack)
	}
	return ack
}

// BenchDORA runs one DISCOVER→OFFER→REQUEST→ACK exchange per iteration through
// handle, each for a new client (MACs wrap around after 60,000, when the clients
// come back to their leases), and reports leases/s.
func BenchDORA(b *testing.B, handle Handle) {
	ctx := context.Background()
	hw := make(net.HardwareAddr, 6)
	hw[0] = 0x02
	serverID := net.ParseIP(ServerIP)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		binary.BigEndian.PutUint32(hw[2:], uint32(i%60000))
		d, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
		off := handle(ctx, d.ToBytes())
		if off == nil {
			b.Fatalf("no offer for client %d", i)
		}
		r, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(off.YourIPAddr)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverID)))
		if ack := handle(ctx, r.ToBytes()); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			b.Fatalf("no ack for client %d", i)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "leases/s")
}

// WaitFor polls cond until it holds, failing tb when timeout passes first.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
