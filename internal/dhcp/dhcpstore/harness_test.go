package dhcpstore

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testclock"
)

// The harness of package dhcp's tests (helpers_test.go), on dhcp's exported API:
// these tests drive a dhcp.Server through HandlePacket with this package's
// store-backed seams. Package dhcp's tests cannot share it, as they would have to
// import this package (an import cycle); the client messages both build come from
// dhcptest.

const (
	macA = "52:54:00:00:00:0a"
	macB = "52:54:00:00:00:0b"
	macM = "52:54:00:00:00:99" // a known machine
)

// harness is a dhcp.Server driven through HandlePacket.
type harness struct {
	t      testing.TB
	srv    *dhcp.Server
	clock  *testclock.Clock
	mu     sync.Mutex
	events []dhcp.Event
	in     dhcp.Inbound
}

func mustSubnet(t testing.TB, name string, spec resource.SubnetSpec) *dhcp.Subnet {
	t.Helper()
	sn, err := dhcp.NewSubnet(name, spec)
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// newHarness returns a harness on the subnets (default: lab), with machines and
// leases in memory; the store tests replace them.
func newHarness(t testing.TB, machines dhcp.Machines, subnets ...*dhcp.Subnet) *harness {
	t.Helper()
	if len(subnets) == 0 {
		subnets = []*dhcp.Subnet{mustSubnet(t, "lab", dhcptest.LabSubnet())}
	}
	h := &harness{
		t:     t,
		clock: testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
		in: dhcp.Inbound{
			Iface: "kd0", IfaceIndex: 7, IfaceAddrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")},
			Src: netip.MustParseAddrPort("0.0.0.0:68"), LocalPort: dhcp.ServerPort,
		},
	}
	h.srv = &dhcp.Server{
		Subnets:  dhcp.StaticSubnets(subnets),
		Machines: machines,
		Leases:   dhcp.NewMemoryLeases(),
		Now:      h.clock.Now,
		OnEvent: func(_ context.Context, e dhcp.Event) {
			h.mu.Lock()
			h.events = append(h.events, e)
			h.mu.Unlock()
		},
	}
	return h
}

// handle answers packet on the harness's inbound interface, as
// dhcptest.BenchDORA drives a server.
func (h *harness) handle(ctx context.Context, packet []byte) *dhcpv4.DHCPv4 {
	if r := h.srv.HandlePacket(ctx, packet, h.in); r != nil {
		return r.Msg
	}
	return nil
}

func (h *harness) send(m *dhcpv4.DHCPv4) *dhcp.Reply {
	h.t.Helper()
	r := h.srv.HandlePacket(context.Background(), m.ToBytes(), h.in)
	if r != nil {
		// What goes on the wire must decode again.
		if _, err := dhcpv4.FromBytes(r.Msg.ToBytes()); err != nil {
			h.t.Fatalf("reply does not decode: %v", err)
		}
	}
	return r
}

// dora runs DISCOVER and REQUEST for a client and returns the ACK.
func (h *harness) dora(hw string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	h.t.Helper()
	return dhcptest.DORA(h.t, h.handle, hw, mods...)
}
