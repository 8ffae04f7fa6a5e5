package dhcp

import (
	"bytes"
	"context"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
)

// validDiscover is a DISCOVER as a PXE ROM sends it, as bytes.
func validDiscover(t testing.TB) []byte {
	return dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover, dhcptest.WithArch(iana.INTEL_X86PC), dhcptest.WithVendor("PXEClient:Arch:00000:UNDI:002001"),
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{1, 0x52, 0x54, 0, 0, 0, 0x0a}))).ToBytes()
}

// optionsEnd is where the options start in a packet.
const optionsStart = 240

func TestMalformedPackets(t *testing.T) {
	base := validDiscover(t)
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(base)) }
	// withOptions replaces the options with raw bytes.
	withOptions := func(opts ...byte) []byte {
		return append(bytes.Clone(base[:optionsStart]), opts...)
	}
	tests := []struct {
		name string
		b    []byte
		want DropReason
	}{
		{"empty", nil, DropMalformed},
		{"one byte", []byte{1}, DropMalformed},
		{"truncated header", base[:200], DropMalformed},
		{"header without cookie", base[:236], DropMalformed},
		{"wrong magic cookie", mutate(func(b []byte) []byte { b[236] = 0x63 + 1; return b }), DropMalformed},
		{"reply opcode", mutate(func(b []byte) []byte { b[0] = 2; return b }), DropNotRequest},
		{"opcode 0", mutate(func(b []byte) []byte { b[0] = 0; return b }), DropNotRequest},
		{"token ring htype", mutate(func(b []byte) []byte { b[1] = 6; return b }), DropNotEthernet},
		{"hlen 16", mutate(func(b []byte) []byte { b[2] = 16; return b }), DropNotEthernet},
		{"hlen 255", mutate(func(b []byte) []byte { b[2] = 255; return b }), DropNotEthernet},
		{"17 hops", mutate(func(b []byte) []byte { b[3] = 17; return b }), DropHops},
		{"giant", append(bytes.Clone(base), make([]byte, 65000)...), DropTooLarge},
		{"option length past the end", withOptions(53, 1, 1, 61, 50, 1, 2, 3), DropMalformed},
		{"option code without length", withOptions(53, 1, 1, 61), DropMalformed},
		{"no end option", withOptions(53, 1, 1), DropMalformed},
		{"message type of length 2", withOptions(53, 2, 1, 1, 255), DropMalformed},
		{"message type of length 0", withOptions(53, 0, 255), DropMalformed},
		{"requested address of length 3", withOptions(53, 1, 1, 50, 3, 10, 0, 0, 255), DropMalformed},
		{"server identifier of length 5", withOptions(53, 1, 3, 54, 5, 10, 0, 0, 1, 1, 255), DropMalformed},
		{"client identifier of length 1", withOptions(53, 1, 1, 61, 1, 1, 255), DropMalformed},
		{"odd architecture list", withOptions(53, 1, 1, 93, 3, 0, 7, 0, 255), DropMalformed},
		{"BOOTP (no message type)", withOptions(255), DropBOOTP},
		{"no options at all", bytes.Clone(base[:optionsStart]), DropBOOTP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePacket(tt.b)
			if err == nil {
				t.Fatal("parsed")
			}
			if got := DropReasonOf(err); got != tt.want {
				t.Errorf("reason %s (%v), want %s", got, err, tt.want)
			}
			// Through the server: no reply, counted, no state.
			h := newHarness(t, knownMachine())
			if r := h.srv.HandlePacket(context.Background(), tt.b, h.in); r != nil {
				t.Fatal("answered")
			}
			if h.srv.Metrics.Dropped(tt.want) != 1 || h.srv.Metrics.Received(0) != 1 {
				t.Errorf("not counted: %+v", h.srv.Metrics.Snapshot())
			}
			if len(h.leases.All()) != 0 || len(h.events) != 0 {
				t.Error("state changed")
			}
		})
	}
	if _, err := ParsePacket(base); err != nil {
		t.Fatalf("the base packet does not parse: %v", err)
	}
}

func TestUnsupportedTypes(t *testing.T) {
	h := newHarness(t, nil)
	for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak, 9, 200} {
		if r := h.send(dhcptest.Msg(t, macA, mt)); r != nil {
			t.Errorf("%s answered", mt)
		}
	}
	if got := h.srv.Metrics.Dropped(DropUnsupportedType); got != 5 {
		t.Errorf("unsupported_type = %d", got)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		mods []dhcpv4.Modifier
		want ClientClass
	}{
		{"nothing", nil, ClientClass{}},
		{"bios pxe", []dhcpv4.Modifier{dhcptest.WithArch(iana.INTEL_X86PC), dhcptest.WithVendor("PXEClient:Arch:00000:UNDI:002001")},
			ClientClass{Arch: ArchBIOS, HasArch: true, PXE: true, VendorClass: "PXEClient:Arch:00000:UNDI:002001"}},
		{"arch only in the vendor class", []dhcpv4.Modifier{dhcptest.WithVendor("PXEClient:Arch:00007:UNDI:003016")},
			ClientClass{Arch: ArchEFIx64, HasArch: true, PXE: true, VendorClass: "PXEClient:Arch:00007:UNDI:003016"}},
		{"http boot", []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_ARM64_HTTP), dhcptest.WithVendor("HTTPClient:Arch:00019:UNDI:003001")},
			ClientClass{Arch: ArchEFIArm64HTTP, HasArch: true, HTTP: true, VendorClass: "HTTPClient:Arch:00019:UNDI:003001"}},
		{"ipxe bare user class", []dhcpv4.Modifier{dhcptest.WithIPXE()}, ClientClass{IPXE: true}},
		{"ipxe rfc 3004 user class", []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte{3, 'f', 'o', 'o', 4, 'i', 'P', 'X', 'E'})}, ClientClass{IPXE: true}},
		{"ipxe option 175", []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{177, 5, 1, 0x80, 0x86, 0x10, 0x0e})}, ClientClass{IPXE: true}},
		{"broken user class", []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte{9, 'i', 'P'})}, ClientClass{}},
		{"garbage vendor class", []dhcpv4.Modifier{dhcptest.WithVendor("PXEClient:Arch:x")}, ClientClass{PXE: true, VendorClass: "PXEClient:Arch:x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover, tt.mods...))
			if got.Arch != tt.want.Arch || got.HasArch != tt.want.HasArch || got.PXE != tt.want.PXE || got.HTTP != tt.want.HTTP ||
				got.IPXE != tt.want.IPXE || got.VendorClass != tt.want.VendorClass {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDefaultBooterConfigurable(t *testing.T) {
	b := &DefaultBooter{BaseURL: "http://boot.lab:9000/kiln/", BIOSFile: "bios/ipxe.kpxe", Script: "script.ipxe", EFIx64File: "x.efi"}
	srv := netip.MustParseAddr("10.0.0.1")
	tests := []struct {
		class ClientClass
		want  BootInfo
	}{
		{ClientClass{IPXE: true, PXE: true}, BootInfo{Filename: "http://boot.lab:9000/kiln/script.ipxe"}},
		{ClientClass{PXE: true, HasArch: true, Arch: ArchBIOS}, BootInfo{NextServer: srv, Filename: "bios/ipxe.kpxe"}},
		{ClientClass{PXE: true, HasArch: true, Arch: ArchEFIx64}, BootInfo{NextServer: srv, Filename: "x.efi"}},
		{ClientClass{HTTP: true, HasArch: true, Arch: ArchEFIx64HTTP}, BootInfo{Filename: "http://boot.lab:9000/kiln/x.efi", VendorClass: "HTTPClient"}},
		{ClientClass{PXE: true, HasArch: true, Arch: ArchEFIIA32}, BootInfo{}},
		{ClientClass{}, BootInfo{}},
	}
	for _, tt := range tests {
		got, err := b.BootInfo(context.Background(), BootRequest{Class: tt.class, Server: srv})
		if err != nil {
			t.Fatal(err)
		}
		if got == nil {
			got = &BootInfo{}
		}
		if *got != tt.want {
			t.Errorf("%+v: got %+v, want %+v", tt.class, got, tt.want)
		}
	}
	if u := (&DefaultBooter{HTTPPort: 81}).url(srv, "/boot.ipxe"); u != "http://10.0.0.1:81/boot.ipxe" {
		t.Errorf("url %s", u)
	}
}

func TestSubnetPools(t *testing.T) {
	sn := mustSubnet(t, "s", resource.SubnetSpec{CIDR: "10.0.0.0/24", Pools: []resource.Pool{
		{Start: "10.0.0.250", End: "10.0.0.255"}, {Start: "10.0.0.0", End: "10.0.0.2"}}})
	var got []string
	ip := sn.Pools[len(sn.Pools)-1].End
	for range 10 {
		ip = sn.nextInPool(ip)
		got = append(got, ip.String())
	}
	want := "[10.0.0.1 10.0.0.2 10.0.0.250 10.0.0.251 10.0.0.252 10.0.0.253 10.0.0.254 10.0.0.1 10.0.0.2 10.0.0.250]"
	if s := "[" + joinStrings(got) + "]"; s != want {
		t.Errorf("walk %s\nwant %s", s, want)
	}
	if sn.InPool(netip.MustParseAddr("10.0.0.0")) || sn.InPool(netip.MustParseAddr("10.0.0.255")) || !sn.InPool(netip.MustParseAddr("10.0.0.251")) {
		t.Error("InPool wrong about network/broadcast addresses")
	}
	if sn.Broadcast().String() != "10.0.0.255" || sn.PoolSize() != 9 {
		t.Errorf("broadcast %s size %d", sn.Broadcast(), sn.PoolSize())
	}
	if _, err := NewSubnet("bad", resource.SubnetSpec{CIDR: "10.0.0.0/24"}); err == nil {
		t.Error("full mode without pools accepted")
	}
}

func joinStrings(s []string) string {
	var b bytes.Buffer
	for i, v := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(v)
	}
	return b.String()
}
