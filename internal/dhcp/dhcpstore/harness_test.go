package dhcpstore

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testclock"
)

// The harness and client messages of package dhcp's tests (helpers_test.go), on
// dhcp's exported API: these tests drive a dhcp.Server through HandlePacket with
// this package's store-backed seams. Package dhcp's tests cannot share them, as
// they would have to import this package (an import cycle).

const (
	macA = "52:54:00:00:00:0a"
	macB = "52:54:00:00:00:0b"
	macM = "52:54:00:00:00:99" // a known machine
)

var (
	serverIP  = netip.MustParseAddr("10.0.0.1")
	labSubnet = resource.SubnetSpec{
		CIDR: "10.0.0.0/24", Mode: resource.ModeFull,
		Pools:  []resource.Pool{{Start: "10.0.0.100", End: "10.0.0.109"}},
		Router: "10.0.0.1", DNS: []string{"10.0.0.53", "10.0.0.54"}, Domain: "lab.example",
		LeaseTime: "2h", MTU: 1500, UnknownMachines: resource.UnknownAllocate,
	}
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
		subnets = []*dhcp.Subnet{mustSubnet(t, "lab", labSubnet)}
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
