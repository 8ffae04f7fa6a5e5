package dhcp

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
)

// fixedBooter answers every request with info (or err), and records the server
// address it was asked for.
type fixedBooter struct {
	info   *BootInfo
	err    error
	server netip.Addr
}

func (b *fixedBooter) BootInfo(_ context.Context, req BootRequest) (*BootInfo, error) {
	b.server = req.Server
	return b.info, b.err
}

// TestBootFileFields: where the boot file goes in an offer. A name that fits the
// 128-byte file field with its NUL goes there, and into option 67 only when the
// client asks for 67; a longer one (a long URL) goes into option 67 alone. siaddr
// is the booter's next server, else the boot server; option 66 is sent when asked
// for and the booter named a next server. A booter error means no boot file.
func TestBootFileFields(t *testing.T) {
	pxe := []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_X86_64), dhcptest.WithVendor("PXEClient:Arch:00007:UNDI:003016")}
	ask := func(codes ...dhcpv4.OptionCode) dhcpv4.Modifier { return dhcpv4.WithRequestedOptions(codes...) }
	name127 := "http://10.0.0.1:8080/" + strings.Repeat("a", 127-len("http://10.0.0.1:8080/"))
	name128 := name127 + "b"
	cases := []struct {
		name       string
		info       *BootInfo
		mods       []dhcpv4.Modifier
		file, opt  string // file field, option 67
		siaddr     string
		opt66      string
		bootServer string // the subnet's spec.bootServer
		wantServer string // the server address the booter was given
	}{
		{"127 bytes: file field only", &BootInfo{Filename: name127}, nil, name127, "", "10.0.0.1", "", "", "10.0.0.1"},
		{"127 bytes, 67 asked for: both", &BootInfo{Filename: name127}, []dhcpv4.Modifier{ask(dhcpv4.OptionBootfileName)}, name127, name127, "10.0.0.1", "", "", "10.0.0.1"},
		{"128 bytes: option 67 only", &BootInfo{Filename: name128}, nil, "", name128, "10.0.0.1", "", "", "10.0.0.1"},
		{"next server, 66 asked for", &BootInfo{Filename: "x.efi", NextServer: netip.MustParseAddr("10.0.0.9")}, []dhcpv4.Modifier{ask(dhcpv4.OptionTFTPServerName)}, "x.efi", "", "10.0.0.9", "10.0.0.9", "", "10.0.0.1"},
		{"next server, 66 not asked for", &BootInfo{Filename: "x.efi", NextServer: netip.MustParseAddr("10.0.0.9")}, nil, "x.efi", "", "10.0.0.9", "", "", "10.0.0.1"},
		{"no next server, 66 asked for", &BootInfo{Filename: "x.efi"}, []dhcpv4.Modifier{ask(dhcpv4.OptionTFTPServerName)}, "x.efi", "", "10.0.0.1", "", "", "10.0.0.1"},
		{"the subnet's boot server", &BootInfo{Filename: "x.efi"}, nil, "x.efi", "", "10.0.0.7", "", "10.0.0.7", "10.0.0.7"},
		{"booter error", nil, nil, "", "", "0.0.0.0", "", "", "10.0.0.1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := dhcptest.LabSubnet()
			spec.BootServer = c.bootServer
			h := newHarness(t, knownMachine(), mustSubnet(t, "lab", spec))
			b := &fixedBooter{info: c.info}
			if c.info == nil {
				b.err = errors.New("booter down")
			}
			h.srv.Booter = b
			// A request without option 55 asks for everything (RFC 2131 3.5): these
			// ask for the mask at least.
			mods := c.mods
			if mods == nil {
				mods = []dhcpv4.Modifier{ask(dhcpv4.OptionSubnetMask)}
			}
			r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover, append(pxe, mods...)...))
			if r == nil {
				t.Fatal("no offer")
			}
			m := r.Msg
			if m.BootFileName != c.file || string(m.Options.Get(dhcpv4.OptionBootfileName)) != c.opt || m.ServerIPAddr.String() != c.siaddr ||
				string(m.Options.Get(dhcpv4.OptionTFTPServerName)) != c.opt66 || b.server.String() != c.wantServer {
				t.Errorf("file %q, 67 %q, siaddr %s, 66 %q, booter asked for %s; want %q %q %s %q %s", m.BootFileName,
					m.Options.Get(dhcpv4.OptionBootfileName), m.ServerIPAddr, m.Options.Get(dhcpv4.OptionTFTPServerName), b.server,
					c.file, c.opt, c.siaddr, c.opt66, c.wantServer)
			}
		})
	}
}

// TestPXEBootItem: sub-option 71 of a request's option 43, read past padding and
// other sub-options, and nothing from a list that ends or breaks before it.
func TestPXEBootItem(t *testing.T) {
	cases := []struct {
		name string
		v    []byte
		want []byte
	}{
		{"alone", []byte{71, 4, 0x80, 0, 0, 1, 255}, []byte{0x80, 0, 0, 1}},
		{"after padding and another sub-option", []byte{0, 0, 6, 1, 8, 71, 4, 1, 2, 3, 4, 255}, []byte{1, 2, 3, 4}},
		{"without end", []byte{71, 2, 9, 9}, []byte{9, 9}},
		{"empty item", []byte{71, 0, 255}, []byte{}},
		{"empty item, the last two bytes", []byte{71, 0}, []byte{}},
		{"after the end", []byte{255, 71, 4, 1, 2, 3, 4}, nil},
		{"a length past the end", []byte{6, 9, 8, 71, 4, 1, 2, 3, 4}, nil},
		{"item cut short", []byte{71, 4, 1, 2, 3}, nil},
		{"a code without length", []byte{6}, nil},
		{"absent", []byte{6, 1, 8, 255}, nil},
		{"none", nil, nil},
	}
	for _, c := range cases {
		m := dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest)
		if c.v != nil {
			m.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, c.v))
		}
		got := pxeBootItem(m)
		if string(got) != string(c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("%s: % x, want % x", c.name, got, c.want)
		}
	}
}

// TestReplyDestination: where a reply goes (RFC 2131 4.1): a boot server reply
// back to its source, or broadcast to the source's port when the source has no
// address; an ACK to a renewing client unicast to its ciaddr; a NAK broadcast.
func TestReplyDestination(t *testing.T) {
	spec := resource.SubnetSpec{CIDR: "10.0.0.0/24", Mode: resource.ModeProxy, UnknownMachines: resource.UnknownAllocate}
	proxy := newHarness(t, nil, mustSubnet(t, "lab", spec))
	in := proxy.in
	in.LocalPort, in.Src = PXEPort, netip.MustParseAddrPort("0.0.0.0:4011")
	pxe := []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_X86_64), dhcptest.WithVendor("PXEClient:Arch:00007:UNDI:003016")}
	if r := proxy.sendIn(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, pxe...), in); r == nil || r.Dst.String() != "255.255.255.255:4011" {
		t.Errorf("boot server reply from 0.0.0.0:4011 to %v, want 255.255.255.255:4011", r)
	}

	h := newHarness(t, knownMachine())
	ip := h.dora(macA).YourIPAddr.String()
	if r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithCiaddr(ip))); r == nil ||
		r.Msg.MessageType() != dhcpv4.MessageTypeAck || r.Dst.String() != ip+":68" {
		t.Errorf("renewal ACK %v, want unicast to %s:68", r, ip)
	}
	if r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithCiaddr("10.0.0.250"))); r == nil ||
		r.Msg.MessageType() != dhcpv4.MessageTypeNak || r.Dst.String() != "255.255.255.255:68" {
		t.Errorf("NAK of a renewal %v, want broadcast to port 68", r)
	}
}

// TestLeaseHostname: the host name a lease records: the machine's host name, else
// its name, else what an unknown client sent in option 12 when that is a valid
// host name; a known machine's own name wins over what it sends.
func TestLeaseHostname(t *testing.T) {
	machines := fakeMachines{
		macM:                {Name: "web-1", IP: netip.MustParseAddr("10.0.0.20"), Hostname: "web-1.lab.example"},
		"52:54:00:00:00:0d": {Name: "web-2", IP: netip.MustParseAddr("10.0.0.21")},
	}
	cases := []struct {
		mac, sent, ip, want string
	}{
		{macM, "other", "10.0.0.20", "web-1.lab.example"},
		{"52:54:00:00:00:0d", "other", "10.0.0.21", "web-2"},
		{macA, "client-a", "10.0.0.100", "client-a"},
		{macB, "not a host name!", "10.0.0.101", ""},
	}
	h := newHarness(t, machines)
	for _, c := range cases {
		ack := h.dora(c.mac, dhcpv4.WithOption(dhcpv4.OptHostName(c.sent)))
		if ack.YourIPAddr.String() != c.ip {
			t.Fatalf("%s got %s, want %s", c.mac, ack.YourIPAddr, c.ip)
		}
		if l := h.lease(c.ip); l == nil || l.Hostname != c.want {
			t.Errorf("%s sending %q: lease %+v, want host name %q", c.mac, c.sent, l, c.want)
		}
	}
}

// TestOfferEventAndReservationTaken: an offer's event names the boot file when
// there is one; a machine whose reserved address another client still holds is
// offered a pool address, and the operator is told so in the log (only then).
func TestOfferEventAndReservationTaken(t *testing.T) {
	var logs bytes.Buffer
	h := newHarness(t, nil)
	h.srv.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover))
	if e := h.lastEvent(); e.Type != EventOffer || e.Message != "offered 10.0.0.100 on subnet lab" {
		t.Errorf("offer event %+v", e)
	}
	h.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeDiscover, dhcptest.WithArch(iana.INTEL_X86PC), dhcptest.WithVendor("PXEClient:Arch:00000:UNDI:002001")))
	if e := h.lastEvent(); e.Message != "offered 10.0.0.101 on subnet lab, boot undionly.kpxe" {
		t.Errorf("PXE offer event %+v", e)
	}
	h.dora(macA) // 10.0.0.100, bound

	h.srv.Machines = fakeMachines{macM: {Name: "web-1", IP: netip.MustParseAddr("10.0.0.100")}, "52:54:00:00:00:0d": {Name: "web-2", IP: netip.MustParseAddr("10.0.0.21")}}
	off := h.send(dhcptest.Msg(t, "52:54:00:00:00:0d", dhcpv4.MessageTypeDiscover))
	if off == nil || off.Msg.YourIPAddr.String() != "10.0.0.21" || strings.Contains(logs.String(), "reserved address is leased to another client") {
		t.Fatalf("a free reservation: offer %v, log:\n%s", off, logs.String())
	}
	off = h.send(dhcptest.Msg(t, macM, dhcpv4.MessageTypeDiscover))
	if off == nil || off.Msg.YourIPAddr.String() == "10.0.0.100" || !h.srv.Subnets.(StaticSubnets)[0].InPool(addrOf(off.Msg.YourIPAddr)) {
		t.Fatalf("taken reservation: offer %v, want another pool address", off)
	}
	if !strings.Contains(logs.String(), "reserved address is leased to another client") || !strings.Contains(logs.String(), "reserved=10.0.0.100") {
		t.Errorf("no warning about the taken reservation:\n%s", logs.String())
	}
}

// TestReservationSinceLease: a machine that got a reservation after it was given
// a pool address is sent back to DISCOVER (NAK) when it asks for the old address
// by itself (INIT-REBOOT), but a REQUEST selecting an offer this server made is
// honoured.
func TestReservationSinceLease(t *testing.T) {
	h := newHarness(t, nil)
	if ip := h.dora(macM).YourIPAddr.String(); ip != "10.0.0.100" {
		t.Fatalf("got %s", ip)
	}
	h.srv.Machines = fakeMachines{macM: {Name: "web-1", IP: netip.MustParseAddr("10.0.0.20")}}
	r := h.send(dhcptest.Msg(t, macM, dhcpv4.MessageTypeRequest, dhcptest.WithRequested("10.0.0.100")))
	if r == nil || r.Msg.MessageType() != dhcpv4.MessageTypeNak || !strings.Contains(r.Msg.Message(), "this machine's address is 10.0.0.20") {
		t.Fatalf("INIT-REBOOT for the old address: %v, want a NAK naming the reservation", r)
	}
	r = h.send(dhcptest.Msg(t, macM, dhcpv4.MessageTypeRequest, dhcptest.WithRequested("10.0.0.100"), dhcptest.WithServerID("10.0.0.1")))
	if r == nil || r.Msg.MessageType() != dhcpv4.MessageTypeAck || r.Msg.YourIPAddr.String() != "10.0.0.100" {
		t.Fatalf("SELECTING our offer of the old address: %v, want an ACK", r)
	}
}

// TestProxyOfferWithoutUUID: a proxy offer echoes option 97 only when the client
// sent one.
func TestProxyOfferWithoutUUID(t *testing.T) {
	spec := resource.SubnetSpec{CIDR: "10.0.0.0/24", Mode: resource.ModeProxy, UnknownMachines: resource.UnknownAllocate}
	h := newHarness(t, nil, mustSubnet(t, "lab", spec))
	r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover, dhcptest.WithArch(iana.INTEL_X86PC), dhcptest.WithVendor("PXEClient:Arch:00000:UNDI:002001")))
	if r == nil || r.Msg.Options.Has(dhcpv4.OptionClientMachineIdentifier) {
		t.Fatalf("proxy offer %v: want one without option 97", r)
	}
}

// TestMachineEventsOnly: with MachineEventsOnly, offers and acks of unknown
// clients make no event; a known machine's still do.
func TestMachineEventsOnly(t *testing.T) {
	h := newHarness(t, knownMachine())
	h.srv.MachineEventsOnly = true
	h.dora(macA)
	if n := len(h.events); n != 0 {
		t.Fatalf("%d events for an unknown client: %+v", n, h.events)
	}
	h.dora(macM)
	if n := len(h.events); n != 2 || h.events[0].Type != EventOffer || h.events[1].Type != EventAck || h.events[1].Machine != "web-1" {
		t.Fatalf("events for a known machine: %+v, want its offer and ack", h.events)
	}
}

// TestMetricsSnapshot: a snapshot holds only counters that are not zero, names
// datagrams that did not parse "other", and an unknown drop reason counts
// nothing and reads as zero.
func TestMetricsSnapshot(t *testing.T) {
	h := newHarness(t, nil)
	if s := h.srv.Metrics.Snapshot(); len(s.Received)+len(s.Sent)+len(s.Dropped) != 0 {
		t.Fatalf("fresh snapshot %+v, want empty maps", s)
	}
	h.handle(context.Background(), []byte{1, 2, 3}) // does not parse
	h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover))
	s := h.srv.Metrics.Snapshot()
	if len(s.Received) != 2 || s.Received["other"] != 1 || s.Received["discover"] != 1 || len(s.Sent) != 1 || s.Sent["offer"] != 1 ||
		len(s.Dropped) != 1 || s.Dropped[DropMalformed.String()] != 1 {
		t.Errorf("snapshot %+v", s)
	}
	h.srv.Metrics.countDrop(numDropReasons)
	if n := h.srv.Metrics.Dropped(numDropReasons); n != 0 {
		t.Errorf("an unknown drop reason reads %d", n)
	}
}
