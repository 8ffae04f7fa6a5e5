package dhcp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
)

const (
	macA = "52:54:00:00:00:0a"
	macB = "52:54:00:00:00:0b"
	macM = "52:54:00:00:00:99" // a known machine
)

func knownMachine() fakeMachines {
	return fakeMachines{macM: {Name: "web-1", IP: netip.MustParseAddr("10.0.0.20"), Hostname: "web-1.lab.example"}}
}

func TestDORAFullOptions(t *testing.T) {
	h := newHarness(t, knownMachine())
	off := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover))
	if off == nil {
		t.Fatal("no offer")
	}
	o := off.Msg
	if o.MessageType() != dhcpv4.MessageTypeOffer || o.YourIPAddr.String() != "10.0.0.100" {
		t.Fatalf("offer: %s yiaddr %s", o.MessageType(), o.YourIPAddr)
	}
	if off.Dst != netip.MustParseAddrPort("255.255.255.255:68") {
		t.Errorf("offer to %s, want broadcast", off.Dst)
	}
	if l := h.lease("10.0.0.100"); l == nil || l.State != resource.LeaseOffered || !l.ExpiresAt.Equal(h.clock.Now().Add(DefaultOfferHold)) {
		t.Errorf("offered lease: %+v", l)
	}
	ack := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithRequested("10.0.0.100"), dhcptest.WithServerID("10.0.0.1")))
	if ack == nil || ack.Msg.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("no ack: %v", ack)
	}
	a := ack.Msg
	checks := []struct {
		name      string
		got, want string
	}{
		{"yiaddr", a.YourIPAddr.String(), "10.0.0.100"},
		{"mask (1)", net.IP(a.SubnetMask()).String(), "255.255.255.0"},
		{"router (3)", fmt.Sprint(a.Router()), "[10.0.0.1]"},
		{"dns (6)", fmt.Sprint(a.DNS()), "[10.0.0.53 10.0.0.54]"},
		{"domain (15)", a.DomainName(), "lab.example"},
		{"lease (51)", a.IPAddressLeaseTime(0).String(), "2h0m0s"},
		{"T1 (58)", a.IPAddressRenewalTime(0).String(), "1h0m0s"},
		{"T2 (59)", a.IPAddressRebindingTime(0).String(), "1h45m0s"},
		{"mtu (26)", fmt.Sprint(binary.BigEndian.Uint16(a.Options.Get(dhcpv4.OptionInterfaceMTU))), "1500"},
		{"server id (54)", a.ServerIdentifier().String(), "10.0.0.1"},
		{"broadcast (28)", a.BroadcastAddress().String(), "10.0.0.255"},
		{"xid", a.TransactionID.String(), ack.Msg.TransactionID.String()},
		{"hostname (12) of an unknown machine", a.HostName(), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	l := h.lease("10.0.0.100")
	if l == nil || l.State != resource.LeaseBound || !l.ExpiresAt.Equal(h.clock.Now().Add(2*time.Hour)) || l.MAC.String() != macA {
		t.Errorf("bound lease: %+v", l)
	}
	if e := h.lastEvent(); e.Type != EventAck || e.IP.String() != "10.0.0.100" {
		t.Errorf("event %+v", e)
	}
	if got := h.srv.Metrics.Snapshot(); got.Received["discover"] != 1 || got.Received["request"] != 1 || got.Sent["offer"] != 1 || got.Sent["ack"] != 1 {
		t.Errorf("metrics %+v", got)
	}
}

func TestReservation(t *testing.T) {
	h := newHarness(t, knownMachine())
	a := h.dora(macM)
	if a.YourIPAddr.String() != "10.0.0.20" {
		t.Fatalf("machine got %s, want its reservation 10.0.0.20 (outside the pool)", a.YourIPAddr)
	}
	if a.HostName() != "web-1.lab.example" {
		t.Errorf("hostname %q", a.HostName())
	}
	if e := h.lastEvent(); e.Machine != "web-1" {
		t.Errorf("event machine %q", e.Machine)
	}
	// Nobody else is offered the reserved address, even when it lies in a pool.
	m := fakeMachines{macM: {Name: "web-1", IP: netip.MustParseAddr("10.0.0.100")}}
	h = newHarness(t, m)
	if off := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover)); off.Msg.YourIPAddr.String() == "10.0.0.100" {
		t.Error("reserved pool address offered to another client")
	}
	if r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithRequested("10.0.0.100"))); r == nil || r.Msg.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("INIT-REBOOT for another machine's reservation: %v, want NAK", r)
	}
	if a := h.dora(macM); a.YourIPAddr.String() != "10.0.0.100" {
		t.Errorf("machine got %s", a.YourIPAddr)
	}
}

func TestRequestStates(t *testing.T) {
	type step struct {
		name    string
		mac     string
		mods    []dhcpv4.Modifier
		advance time.Duration
		want    dhcpv4.MessageType // MessageTypeNone: no reply
		wantIP  string
		wantDst string
		drop    DropReason
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"renewing: unicast ciaddr, ACK to ciaddr", []step{
			{name: "renew", mac: macA, mods: []dhcpv4.Modifier{dhcptest.WithCiaddr("10.0.0.100"), dhcpv4.WithBroadcast(false)}, advance: time.Hour,
				want: dhcpv4.MessageTypeAck, wantIP: "10.0.0.100", wantDst: "10.0.0.100:68"},
		}},
		{"rebinding after expiry of nobody else's claim", []step{
			{name: "rebind", mac: macA, mods: []dhcpv4.Modifier{dhcptest.WithCiaddr("10.0.0.100")}, advance: 3 * time.Hour,
				want: dhcpv4.MessageTypeAck, wantIP: "10.0.0.100", wantDst: "10.0.0.100:68"},
		}},
		{"init-reboot with a record", []step{
			{name: "reboot", mac: macA, mods: []dhcpv4.Modifier{dhcptest.WithRequested("10.0.0.100")},
				want: dhcpv4.MessageTypeAck, wantIP: "10.0.0.100", wantDst: "255.255.255.255:68"},
		}},
		{"init-reboot without a record stays silent", []step{
			{name: "reboot", mac: macB, mods: []dhcpv4.Modifier{dhcptest.WithRequested("10.0.0.105")}, drop: DropNoRecord},
		}},
		{"init-reboot on the wrong network", []step{
			{name: "reboot", mac: macA, mods: []dhcpv4.Modifier{dhcptest.WithRequested("192.168.1.10")}, want: dhcpv4.MessageTypeNak, wantDst: "255.255.255.255:68"},
		}},
		{"init-reboot for an address outside the pools", []step{
			{name: "reboot", mac: macA, mods: []dhcpv4.Modifier{dhcptest.WithRequested("10.0.0.200")}, want: dhcpv4.MessageTypeNak},
		}},
		{"address of another client", []step{
			{name: "b takes a's address", mac: macB, mods: []dhcpv4.Modifier{dhcptest.WithRequested("10.0.0.100"), dhcptest.WithServerID("10.0.0.1")}, want: dhcpv4.MessageTypeNak},
			{name: "b renews a's address", mac: macB, mods: []dhcpv4.Modifier{dhcptest.WithCiaddr("10.0.0.100")}, want: dhcpv4.MessageTypeNak, wantDst: "255.255.255.255:68"},
		}},
		{"selecting another server", []step{
			{name: "other server", mac: macA, mods: []dhcpv4.Modifier{dhcptest.WithRequested("10.0.0.100"), dhcptest.WithServerID("10.0.0.2")}, drop: DropNotForUs},
		}},
		{"request without address", []step{
			{name: "empty", mac: macA, drop: DropMalformed},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.dora(macA) // macA holds 10.0.0.100 for 2h
			for _, s := range tt.steps {
				h.clock.Advance(s.advance)
				before := h.srv.Metrics.Dropped(s.drop)
				r := h.send(dhcptest.Msg(t, s.mac, dhcpv4.MessageTypeRequest, s.mods...))
				if s.want == dhcpv4.MessageTypeNone {
					if r != nil {
						t.Fatalf("%s: reply %s, want none", s.name, r.Msg.MessageType())
					}
					if h.srv.Metrics.Dropped(s.drop) != before+1 {
						t.Errorf("%s: drop %s not counted", s.name, s.drop)
					}
					continue
				}
				if r == nil || r.Msg.MessageType() != s.want {
					t.Fatalf("%s: reply %v, want %s", s.name, r, s.want)
				}
				if s.wantIP != "" && r.Msg.YourIPAddr.String() != s.wantIP {
					t.Errorf("%s: yiaddr %s, want %s", s.name, r.Msg.YourIPAddr, s.wantIP)
				}
				if s.wantDst != "" && r.Dst.String() != s.wantDst {
					t.Errorf("%s: sent to %s, want %s", s.name, r.Dst, s.wantDst)
				}
				if s.want == dhcpv4.MessageTypeNak && (!r.Msg.YourIPAddr.IsUnspecified() || r.Msg.Message() == "") {
					t.Errorf("%s: NAK with yiaddr %s, message %q", s.name, r.Msg.YourIPAddr, r.Msg.Message())
				}
			}
			// Whatever happened, a's lease is still a's.
			if l := h.lease("10.0.0.100"); l == nil || l.MAC.String() != macA {
				t.Errorf("lease of 10.0.0.100: %+v", l)
			}
		})
	}
}

func TestSelectingOtherServerFreesOffer(t *testing.T) {
	h := newHarness(t, nil)
	off := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover))
	ip := off.Msg.YourIPAddr.String()
	if r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithRequested("10.0.0.150"), dhcptest.WithServerID("10.0.0.2"))); r != nil {
		t.Fatal("answered a request for another server")
	}
	if l := h.lease(ip); l == nil || l.State != resource.LeaseReleased {
		t.Fatalf("offer not released: %+v", l)
	}
	if off := h.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeDiscover)); off.Msg.YourIPAddr.String() != "10.0.0.101" {
		// Released addresses come after unused ones.
		t.Errorf("b offered %s", off.Msg.YourIPAddr)
	}
}

func TestReleaseAndReuse(t *testing.T) {
	h := newHarness(t, nil)
	ip := h.dora(macA).YourIPAddr.String()
	// A RELEASE from another MAC changes nothing.
	if r := h.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeRelease, dhcptest.WithCiaddr(ip), dhcptest.WithServerID("10.0.0.1"))); r != nil {
		t.Fatal("reply to RELEASE")
	}
	if l := h.lease(ip); l.State != resource.LeaseBound {
		t.Fatalf("foreign release changed the lease: %+v", l)
	}
	h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRelease, dhcptest.WithCiaddr(ip), dhcptest.WithServerID("10.0.0.1")))
	if l := h.lease(ip); l.State != resource.LeaseReleased {
		t.Fatalf("lease after release: %+v", l)
	}
	if e := h.lastEvent(); e.Type != EventRelease {
		t.Errorf("event %+v", e)
	}
	// The client comes back: same address.
	if got := h.dora(macA).YourIPAddr.String(); got != ip {
		t.Errorf("came back to %s, want %s", got, ip)
	}
}

func TestExpiredLeasesReusedLast(t *testing.T) {
	sn := mustSubnet(t, "lab", resource.SubnetSpec{CIDR: "10.0.0.0/24", Pools: []resource.Pool{{Start: "10.0.0.100", End: "10.0.0.102"}}, UnknownMachines: "allocate", LeaseTime: "1h"})
	h := newHarness(t, nil, sn)
	for i := range 3 {
		h.dora(fmt.Sprintf("52:54:00:00:01:%02x", i))
	}
	if off := h.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeDiscover)); off != nil {
		t.Fatalf("full pool offered %s", off.Msg.YourIPAddr)
	}
	if h.srv.Metrics.Dropped(DropPoolExhausted) != 1 {
		t.Error("pool exhaustion not counted")
	}
	h.clock.Advance(2 * time.Hour)
	// Client 1 comes back after expiry: its old address.
	if got := h.dora("52:54:00:00:01:01").YourIPAddr.String(); got != "10.0.0.101" {
		t.Errorf("returning client got %s, want 10.0.0.101", got)
	}
	// A new client gets an expired address of someone else.
	if got := h.dora(macB).YourIPAddr.String(); got == "10.0.0.101" {
		t.Errorf("new client got the returning client's address")
	}
}

func TestDeclineQuarantine(t *testing.T) {
	h := newHarness(t, nil)
	h.srv.DeclineQuarantine = 10 * time.Minute
	ip := h.dora(macA).YourIPAddr.String()
	// A DECLINE of somebody else's address is ignored.
	h.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeDecline, dhcptest.WithRequested(ip), dhcptest.WithServerID("10.0.0.1")))
	if l := h.lease(ip); l.State != resource.LeaseBound {
		t.Fatalf("foreign decline: %+v", l)
	}
	h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDecline, dhcptest.WithRequested(ip), dhcptest.WithServerID("10.0.0.1")))
	if l := h.lease(ip); l.State != resource.LeaseDeclined {
		t.Fatalf("lease after decline: %+v", l)
	}
	if h.srv.Metrics.Quarantined.Load() != 1 || h.lastEvent().Type != EventDecline {
		t.Error("decline not counted or reported")
	}
	// Neither the client nor anybody else gets it during the quarantine.
	if got := h.dora(macA).YourIPAddr.String(); got == ip {
		t.Error("declined address handed out again to the same client")
	}
	if r := h.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeRequest, dhcptest.WithRequested(ip), dhcptest.WithServerID("10.0.0.1"))); r == nil || r.Msg.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("request for a quarantined address: %v", r)
	}
	h.clock.Advance(11 * time.Minute)
	if r := h.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeRequest, dhcptest.WithRequested(ip), dhcptest.WithServerID("10.0.0.1"))); r == nil || r.Msg.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("request after the quarantine: %v", r)
	}
}

// TestDeclineFlood: clients with forged MACs take addresses and decline them; the
// quarantine never holds more than the per-subnet limit, and one MAC cannot
// quarantine more than the per-client limit.
func TestDeclineFlood(t *testing.T) {
	sn := mustSubnet(t, "lab", resource.SubnetSpec{CIDR: "10.0.0.0/24", Pools: []resource.Pool{{Start: "10.0.0.100", End: "10.0.0.139"}}, UnknownMachines: "allocate"})
	h := newHarness(t, nil, sn)
	// One MAC declining again and again: quarantined at most twice.
	for range 5 {
		off := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover))
		ip := off.Msg.YourIPAddr.String()
		h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithRequested(ip), dhcptest.WithServerID("10.0.0.1")))
		h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDecline, dhcptest.WithRequested(ip), dhcptest.WithServerID("10.0.0.1")))
	}
	if q := h.srv.Metrics.Quarantined.Load(); q != DefaultDeclinesPerClient {
		t.Errorf("one MAC quarantined %d addresses, want %d", q, DefaultDeclinesPerClient)
	}
	// Many MACs: at most an eighth of the 40-address pool (5) in quarantine.
	for i := range 30 {
		hw := fmt.Sprintf("52:54:00:00:02:%02x", i)
		ip := h.dora(hw).YourIPAddr.String()
		h.send(dhcptest.Msg(t, hw, dhcpv4.MessageTypeDecline, dhcptest.WithRequested(ip), dhcptest.WithServerID("10.0.0.1")))
	}
	declined := 0
	for _, l := range h.leases.All() {
		if l.State == resource.LeaseDeclined {
			declined++
		}
	}
	if declined != 5 {
		t.Errorf("%d addresses in quarantine, want the limit 5", declined)
	}
	if h.srv.Metrics.Dropped(DropDeclineLimited) == 0 {
		t.Error("refused declines not counted")
	}
}

func TestInform(t *testing.T) {
	h := newHarness(t, nil)
	r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeInform, dhcptest.WithCiaddr("10.0.0.77"), dhcpv4.WithBroadcast(false)))
	if r == nil || r.Msg.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("inform: %v", r)
	}
	if !r.Msg.YourIPAddr.IsUnspecified() || r.Msg.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || r.Msg.Options.Has(dhcpv4.OptionRenewTimeValue) {
		t.Errorf("INFORM answer with an address or lease times: %s", r.Msg.Summary())
	}
	if r.Dst.String() != "10.0.0.77:68" || r.Msg.DomainName() != "lab.example" {
		t.Errorf("dst %s domain %q", r.Dst, r.Msg.DomainName())
	}
	if len(h.leases.All()) != 0 {
		t.Error("INFORM created a lease")
	}
}

func TestRelay(t *testing.T) {
	remote := mustSubnet(t, "remote", resource.SubnetSpec{CIDR: "10.9.0.0/24", Pools: []resource.Pool{{Start: "10.9.0.10", End: "10.9.0.20"}}, Router: "10.9.0.1", UnknownMachines: "allocate"})
	h := newHarness(t, nil, mustSubnet(t, "lab", dhcptest.LabSubnet()), remote)
	relay := dhcpv4.WithGatewayIP(net.ParseIP("10.9.0.1"))
	opt82 := dhcpv4.WithOption(dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte("port7"))))
	off := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover, relay, opt82, func(d *dhcpv4.DHCPv4) { d.HopCount = 1 }))
	if off == nil || off.Msg.YourIPAddr.String() != "10.9.0.10" {
		t.Fatalf("relayed offer %v", off)
	}
	if off.Dst.String() != "10.9.0.1:67" || off.Msg.GatewayIPAddr.String() != "10.9.0.1" {
		t.Errorf("relayed offer to %s giaddr %s", off.Dst, off.Msg.GatewayIPAddr)
	}
	if string(off.Msg.Options.Get(dhcpv4.OptionRelayAgentInformation)) != string([]byte{1, 5, 'p', 'o', 'r', 't', '7'}) {
		t.Errorf("option 82 not echoed: % x", off.Msg.Options.Get(dhcpv4.OptionRelayAgentInformation))
	}
	if fmt.Sprint(off.Msg.Router()) != "[10.9.0.1]" {
		t.Errorf("router %v", off.Msg.Router())
	}
	nak := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, relay, dhcptest.WithRequested("10.0.0.100"), dhcpv4.WithBroadcast(false)))
	if nak == nil || nak.Msg.MessageType() != dhcpv4.MessageTypeNak || !nak.Msg.IsBroadcast() || nak.Dst.String() != "10.9.0.1:67" {
		t.Errorf("relayed NAK: %v", nak)
	}
	// A relay from a network no subnet covers is dropped.
	if r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.ParseIP("172.16.0.1")))); r != nil {
		t.Error("answered a relay of an unknown network")
	}
	if h.srv.Metrics.Dropped(DropNoSubnet) != 1 {
		t.Error("no_subnet not counted")
	}
}

func TestSubnetSelection(t *testing.T) {
	a := mustSubnet(t, "a", resource.SubnetSpec{CIDR: "10.1.0.0/24", Pools: []resource.Pool{{Start: "10.1.0.10", End: "10.1.0.20"}}, UnknownMachines: "allocate", Interfaces: []string{"eth1"}})
	b := mustSubnet(t, "b", resource.SubnetSpec{CIDR: "10.2.0.0/24", Pools: []resource.Pool{{Start: "10.2.0.10", End: "10.2.0.20"}}, UnknownMachines: "allocate"})
	tests := []struct {
		name  string
		in    Inbound
		giadd string
		want  string
	}{
		{"bound interface", Inbound{Iface: "eth1", IfaceAddrs: []netip.Prefix{netip.MustParsePrefix("192.168.0.1/24")}}, "", "a"},
		{"interface address", Inbound{Iface: "eth2", IfaceAddrs: []netip.Prefix{netip.MustParsePrefix("10.2.0.1/24")}}, "", "b"},
		{"bound subnet not on another interface", Inbound{Iface: "eth3", IfaceAddrs: []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24")}}, "", ""},
		{"giaddr wins", Inbound{Iface: "eth1"}, "10.2.0.1", "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover)
			if tt.giadd != "" {
				m.GatewayIPAddr = net.ParseIP(tt.giadd)
			}
			got := selectSubnet([]*Subnet{a, b}, m, tt.in, false)
			if name := func() string {
				if got == nil {
					return ""
				}
				return got.Name
			}(); name != tt.want {
				t.Errorf("subnet %q, want %q", name, tt.want)
			}
		})
	}
	if got := selectSubnet([]*Subnet{b}, dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover), Inbound{Iface: "eth9"}, false); got != b {
		t.Error("the only subnet is not chosen")
	}
}

func TestUnknownMachinePolicies(t *testing.T) {
	for _, policy := range []string{resource.UnknownIgnore, resource.UnknownDiscovery, resource.UnknownAllocate} {
		t.Run(policy, func(t *testing.T) {
			spec := dhcptest.LabSubnet()
			spec.UnknownMachines, spec.DiscoveryProfile = policy, "discover"
			h := newHarness(t, knownMachine(), mustSubnet(t, "lab", spec))
			pxe := []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_X86_64), dhcptest.WithVendor("PXEClient:Arch:00007:UNDI:003016")}
			off := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover, pxe...))
			if policy == resource.UnknownIgnore {
				if off != nil || h.srv.Metrics.Dropped(DropUnknownIgnored) != 1 {
					t.Fatalf("ignored MAC answered (%v) or not counted", off)
				}
				// Known machines are still served.
				h.dora(macM)
				return
			}
			if off == nil || off.Msg.YourIPAddr.IsUnspecified() || off.Msg.BootFileName != "ipxe.efi" {
				t.Fatalf("offer %v", off)
			}
			ip := off.Msg.YourIPAddr.String()
			h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, append(pxe, dhcptest.WithRequested(ip), dhcptest.WithServerID("10.0.0.1"))...))
			if l := h.lease(ip); l == nil || l.State != resource.LeaseBound || l.Discovery != (policy == resource.UnknownDiscovery) {
				t.Errorf("lease %+v", l)
			}
		})
	}
}

func TestModeOff(t *testing.T) {
	spec := dhcptest.LabSubnet()
	spec.Mode = resource.ModeOff
	h := newHarness(t, knownMachine(), mustSubnet(t, "lab", spec))
	if r := h.send(dhcptest.Msg(t, macM, dhcpv4.MessageTypeDiscover)); r != nil {
		t.Fatal("off mode answered")
	}
	if h.srv.Metrics.Dropped(DropModeOff) != 1 {
		t.Error("mode_off not counted")
	}
}

func TestFullModeBoot(t *testing.T) {
	h := newHarness(t, knownMachine())
	tests := []struct {
		name       string
		mods       []dhcpv4.Modifier
		file       string
		siaddr     string
		vendor     string
		noProxyOpt bool
	}{
		{"bios", []dhcpv4.Modifier{dhcptest.WithArch(iana.INTEL_X86PC), dhcptest.WithVendor("PXEClient:Arch:00000:UNDI:002001")}, "undionly.kpxe", "10.0.0.1", "", false},
		{"uefi x64", []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_X86_64), dhcptest.WithVendor("PXEClient:Arch:00007:UNDI:003016")}, "ipxe.efi", "10.0.0.1", "", false},
		{"uefi bc", []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_BC), dhcptest.WithVendor("PXEClient:Arch:00009:UNDI:003016")}, "ipxe.efi", "10.0.0.1", "", false},
		{"uefi arm64", []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_ARM64), dhcptest.WithVendor("PXEClient:Arch:00011:UNDI:003000")}, "ipxe-arm64.efi", "10.0.0.1", "", false},
		{"http boot x64", []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_X86_64_HTTP), dhcptest.WithVendor("HTTPClient:Arch:00016:UNDI:003001")}, "http://10.0.0.1:8080/ipxe.efi", "10.0.0.1", "HTTPClient", false},
		{"http boot arm64", []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_ARM64_HTTP), dhcptest.WithVendor("HTTPClient:Arch:00019:UNDI:003001")}, "http://10.0.0.1:8080/ipxe-arm64.efi", "10.0.0.1", "HTTPClient", false},
		{"ipxe", []dhcpv4.Modifier{dhcptest.WithArch(iana.INTEL_X86PC), dhcptest.WithVendor("PXEClient:Arch:00000:UNDI:002001"), dhcptest.WithIPXE()}, "http://10.0.0.1:8080/boot.ipxe", "10.0.0.1", "", true},
		{"linux dhclient", nil, "", "0.0.0.0", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest} {
				mods := tt.mods
				if mt == dhcpv4.MessageTypeRequest {
					mods = append(mods, dhcptest.WithRequested("10.0.0.20"), dhcptest.WithServerID("10.0.0.1"))
				}
				r := h.send(dhcptest.Msg(t, macM, mt, mods...))
				if r == nil {
					t.Fatalf("%s: no reply", mt)
				}
				m := r.Msg
				if m.BootFileName != tt.file || m.ServerIPAddr.String() != tt.siaddr {
					t.Errorf("%s: file %q siaddr %s, want %q %s", mt, m.BootFileName, m.ServerIPAddr, tt.file, tt.siaddr)
				}
				if got := m.ClassIdentifier(); got != tt.vendor {
					t.Errorf("%s: option 60 %q, want %q", mt, got, tt.vendor)
				}
				if got := m.Options.Has(dhcpv4.GenericOptionCode(175)); got != tt.noProxyOpt {
					t.Errorf("%s: option 175 present %v", mt, got)
				}
			}
		})
	}
}

func TestProxyMode(t *testing.T) {
	spec := resource.SubnetSpec{CIDR: "10.0.0.0/24", Mode: resource.ModeProxy, UnknownMachines: resource.UnknownDiscovery, DiscoveryProfile: "discover"}
	h := newHarness(t, nil, mustSubnet(t, "lab", spec))
	uuid := dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, make([]byte, 16)...))
	tests := []struct {
		name   string
		mods   []dhcpv4.Modifier
		file   string
		vendor string
		opt43  bool
	}{
		{"bios pxe", []dhcpv4.Modifier{dhcptest.WithArch(iana.INTEL_X86PC), dhcptest.WithVendor("PXEClient:Arch:00000:UNDI:002001"), uuid}, "undionly.kpxe", "PXEClient", true},
		{"uefi pxe", []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_X86_64), dhcptest.WithVendor("PXEClient:Arch:00007:UNDI:003016"), uuid}, "ipxe.efi", "PXEClient", false},
		{"http boot", []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_X86_64_HTTP), dhcptest.WithVendor("HTTPClient:Arch:00016:UNDI:003001")}, "http://10.0.0.1:8080/ipxe.efi", "HTTPClient", false},
		{"ipxe", []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_X86_64), dhcptest.WithVendor("PXEClient:Arch:00007:UNDI:003016"), dhcptest.WithIPXE()}, "http://10.0.0.1:8080/boot.ipxe", "PXEClient", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover, tt.mods...))
			if r == nil {
				t.Fatal("no proxy offer")
			}
			m := r.Msg
			if m.MessageType() != dhcpv4.MessageTypeOffer || !m.YourIPAddr.IsUnspecified() {
				t.Fatalf("proxy offer %s with yiaddr %s", m.MessageType(), m.YourIPAddr)
			}
			if m.BootFileName != tt.file || m.ClassIdentifier() != tt.vendor || m.Options.Has(dhcpv4.OptionVendorSpecificInformation) != tt.opt43 {
				t.Errorf("file %q vendor %q 43 %v", m.BootFileName, m.ClassIdentifier(), m.Options.Has(dhcpv4.OptionVendorSpecificInformation))
			}
			if m.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || m.Options.Has(dhcpv4.OptionSubnetMask) {
				t.Error("proxy offer carries address configuration")
			}
			if m.Options.Has(dhcpv4.GenericOptionCode(175)) {
				t.Error("proxy offer tells iPXE to skip proxyDHCP")
			}
			// The UEFI firmware's follow-up to the boot server port.
			in := h.in
			in.LocalPort, in.Src = PXEPort, netip.MustParseAddrPort("10.0.0.150:68")
			ack := h.sendIn(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, append(tt.mods, dhcptest.WithCiaddr("10.0.0.150"))...), in)
			if ack == nil || ack.Msg.MessageType() != dhcpv4.MessageTypeAck || ack.Msg.BootFileName != tt.file || ack.Dst.String() != "10.0.0.150:68" {
				t.Fatalf("boot server ack %v", ack)
			}
		})
	}
	if len(h.leases.All()) != 0 {
		t.Error("proxy mode created leases")
	}
	if r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover)); r != nil {
		t.Error("proxy answered a client that does not netboot")
	}
	if r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithVendor("PXEClient"), dhcptest.WithRequested("10.0.0.150"), dhcptest.WithServerID("10.0.0.254"))); r != nil {
		t.Error("proxy answered a REQUEST meant for the DHCP server")
	}
	if h.srv.Metrics.Dropped(DropNotNetboot) != 1 || h.srv.Metrics.Dropped(DropNotForUs) != 1 {
		t.Errorf("drops %+v", h.srv.Metrics.Snapshot().Dropped)
	}
}

func TestBootServerItemEcho(t *testing.T) {
	spec := resource.SubnetSpec{CIDR: "10.0.0.0/24", Mode: resource.ModeProxy, UnknownMachines: resource.UnknownAllocate}
	h := newHarness(t, nil, mustSubnet(t, "lab", spec))
	in := h.in
	in.LocalPort, in.Src = PXEPort, netip.MustParseAddrPort("10.0.0.150:4011")
	item := dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, 0x80, 0x00, 0x00, 0x00, 255})
	r := h.sendIn(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithArch(iana.EFI_BC), dhcptest.WithVendor("PXEClient:Arch:00009:UNDI:003016"), dhcptest.WithCiaddr("10.0.0.150"), item), in)
	if r == nil || string(r.Msg.Options.Get(dhcpv4.OptionVendorSpecificInformation)) != string([]byte{71, 4, 0x80, 0, 0, 0, 255}) {
		t.Fatalf("boot item not echoed: %v", r)
	}
	if r.Dst.String() != "10.0.0.150:4011" {
		t.Errorf("dst %s", r.Dst)
	}
	// A DISCOVER on the boot server port is not a thing.
	if r := h.sendIn(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover, dhcptest.WithVendor("PXEClient")), in); r != nil {
		t.Error("answered DISCOVER on port 4011")
	}
}

func TestPrefersPreviousAddress(t *testing.T) {
	h := newHarness(t, nil)
	h.dora(macB)
	ip := h.dora(macA).YourIPAddr.String()
	h.clock.Advance(5 * time.Hour) // both expired
	// The requested address (option 50) is honored when free...
	if off := h.send(dhcptest.Msg(t, "52:54:00:00:00:0c", dhcpv4.MessageTypeDiscover, dhcptest.WithRequested("10.0.0.105"))); off.Msg.YourIPAddr.String() != "10.0.0.105" {
		t.Errorf("requested address not offered: %s", off.Msg.YourIPAddr)
	}
	// ...and a returning client gets its old address even without asking.
	if off := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover)); off.Msg.YourIPAddr.String() != ip {
		t.Errorf("returning client offered %s, want %s", off.Msg.YourIPAddr, ip)
	}
}

func TestDiscoverFromBoundClientKeepsLease(t *testing.T) {
	h := newHarness(t, nil)
	ip := h.dora(macA).YourIPAddr.String()
	before := *h.lease(ip)
	off := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover))
	if off.Msg.YourIPAddr.String() != ip {
		t.Fatalf("bound client offered %s", off.Msg.YourIPAddr)
	}
	if after := h.lease(ip); after.State != resource.LeaseBound || !after.ExpiresAt.Equal(before.ExpiresAt) {
		t.Errorf("DISCOVER changed a bound lease: %+v", after)
	}
}

func TestEventsNilSafeAndNoLogger(t *testing.T) {
	h := newHarness(t, nil)
	h.srv.OnEvent = nil
	h.dora(macA)
}
