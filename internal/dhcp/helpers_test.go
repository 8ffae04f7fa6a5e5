package dhcp

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testclock"
)

// fakeMachines is an in-memory Machines and Reservations, keyed by MAC.
type fakeMachines map[string]*Machine

func (f fakeMachines) MachineByMAC(_ context.Context, mac net.HardwareAddr) (*Machine, error) {
	if m, ok := f[mac.String()]; ok {
		c := *m
		return &c, nil
	}
	return nil, ErrUnknownMachine
}

func (f fakeMachines) ReservedBy(_ context.Context, ip netip.Addr) (string, error) {
	for _, m := range f {
		if m.IP == ip {
			return m.Name, nil
		}
	}
	return "", nil
}

// harness is a Server on in-memory seams, driven through HandlePacket.
type harness struct {
	t      testing.TB
	srv    *Server
	leases *MemoryLeases
	clock  *testclock.Clock
	mu     sync.Mutex
	events []Event
	in     Inbound
}

func mustSubnet(t testing.TB, name string, spec resource.SubnetSpec) *Subnet {
	t.Helper()
	sn, err := NewSubnet(name, spec)
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

func newHarness(t testing.TB, machines fakeMachines, subnets ...*Subnet) *harness {
	t.Helper()
	if len(subnets) == 0 {
		subnets = []*Subnet{mustSubnet(t, "lab", dhcptest.LabSubnet())}
	}
	h := &harness{
		t:      t,
		leases: NewMemoryLeases(),
		clock:  testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
		in: Inbound{
			Iface: "kd0", IfaceIndex: 7, IfaceAddrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")},
			Src: netip.MustParseAddrPort("0.0.0.0:68"), LocalPort: ServerPort,
		},
	}
	h.srv = &Server{
		Subnets:  StaticSubnets(subnets),
		Machines: machines,
		Leases:   h.leases,
		Now:      h.clock.Now,
		OnEvent: func(_ context.Context, e Event) {
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

func (h *harness) send(m *dhcpv4.DHCPv4) *Reply {
	h.t.Helper()
	return h.sendIn(m, h.in)
}

func (h *harness) sendIn(m *dhcpv4.DHCPv4, in Inbound) *Reply {
	h.t.Helper()
	r := h.srv.HandlePacket(context.Background(), m.ToBytes(), in)
	if r != nil {
		// What goes on the wire must decode again.
		if _, err := dhcpv4.FromBytes(r.Msg.ToBytes()); err != nil {
			h.t.Fatalf("reply does not decode: %v", err)
		}
	}
	return r
}

func (h *harness) lastEvent() Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.events) == 0 {
		return Event{}
	}
	return h.events[len(h.events)-1]
}

func (h *harness) lease(ip string) *Lease {
	for _, l := range h.leases.All() {
		if l.IP.String() == ip {
			return &l
		}
	}
	return nil
}

// dora runs DISCOVER and REQUEST for a client and returns the ACK.
func (h *harness) dora(hw string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	h.t.Helper()
	return dhcptest.DORA(h.t, h.handle, hw, mods...)
}
