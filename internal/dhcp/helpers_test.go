package dhcp

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

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

var (
	serverIP  = netip.MustParseAddr("10.0.0.1")
	labSubnet = resource.SubnetSpec{
		CIDR: "10.0.0.0/24", Mode: resource.ModeFull,
		Pools:  []resource.Pool{{Start: "10.0.0.100", End: "10.0.0.109"}},
		Router: "10.0.0.1", DNS: []string{"10.0.0.53", "10.0.0.54"}, Domain: "lab.example",
		LeaseTime: "2h", MTU: 1500, UnknownMachines: resource.UnknownAllocate,
	}
)

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
		subnets = []*Subnet{mustSubnet(t, "lab", labSubnet)}
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

// ---- client messages, built the way clients build them ---------------------------------

func mac(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

func msg(t testing.TB, hw string, mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac(hw)), dhcpv4.WithMessageType(mt), dhcpv4.WithBroadcast(true),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func withRequested(ip string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip)))
}

func withServerID(ip string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(ip)))
}

func withCiaddr(ip string) dhcpv4.Modifier { return dhcpv4.WithClientIP(net.ParseIP(ip)) }

func withArch(a iana.Arch) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptClientArch(a)) }

func withVendor(v string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptClassIdentifier(v))
}

// withIPXE sets option 77 the way iPXE does: the bare string, not RFC 3004.
func withIPXE() dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))
}

// dora runs DISCOVER and REQUEST for a client and returns the ACK.
func (h *harness) dora(hw string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	h.t.Helper()
	off := h.send(msg(h.t, hw, dhcpv4.MessageTypeDiscover, mods...))
	if off == nil {
		h.t.Fatalf("%s: no offer", hw)
	}
	ip := off.Msg.YourIPAddr.String()
	ack := h.send(msg(h.t, hw, dhcpv4.MessageTypeRequest, append(mods, withRequested(ip), withServerID(serverIP.String()))...))
	if ack == nil || ack.Msg.MessageType() != dhcpv4.MessageTypeAck {
		h.t.Fatalf("%s: no ACK for %s: %v", hw, ip, ack)
	}
	return ack.Msg
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
