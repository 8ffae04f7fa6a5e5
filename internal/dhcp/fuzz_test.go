package dhcp

import (
	"bytes"
	"context"
	"net/netip"
	"reflect"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
)

// fuzzSeeds are the captured client packets of testdata/packets plus a few built
// here (every message type, relayed, PXE and HTTP boot clients).
func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, g := range loadCaptures(f) {
		seeds = append(seeds, g.raw)
	}
	pxe := []dhcpv4.Modifier{dhcptest.WithArch(iana.EFI_X86_64), dhcptest.WithVendor("PXEClient:Arch:00007:UNDI:003016")}
	seeds = append(seeds,
		validDiscover(f),
		dhcptest.Msg(f, macA, dhcpv4.MessageTypeDiscover, pxe...).ToBytes(),
		dhcptest.Msg(f, macA, dhcpv4.MessageTypeRequest, dhcptest.WithRequested("10.0.0.100"), dhcptest.WithServerID("10.0.0.1")).ToBytes(),
		dhcptest.Msg(f, macA, dhcpv4.MessageTypeRequest, dhcptest.WithCiaddr("10.0.0.100")).ToBytes(),
		dhcptest.Msg(f, macA, dhcpv4.MessageTypeRequest, dhcptest.WithRequested("10.0.0.100")).ToBytes(),
		dhcptest.Msg(f, macA, dhcpv4.MessageTypeRelease, dhcptest.WithCiaddr("10.0.0.100"), dhcptest.WithServerID("10.0.0.1")).ToBytes(),
		dhcptest.Msg(f, macA, dhcpv4.MessageTypeDecline, dhcptest.WithRequested("10.0.0.100"), dhcptest.WithServerID("10.0.0.1")).ToBytes(),
		dhcptest.Msg(f, macA, dhcpv4.MessageTypeInform, dhcptest.WithCiaddr("10.0.0.7")).ToBytes(),
		dhcptest.Msg(f, macA, dhcpv4.MessageTypeDiscover, dhcptest.WithArch(iana.EFI_X86_64_HTTP), dhcptest.WithVendor("HTTPClient:Arch:00016:UNDI:003001")).ToBytes(),
		dhcptest.Msg(f, macA, dhcpv4.MessageTypeDiscover, dhcptest.WithIPXE(), dhcpv4.WithGatewayIP([]byte{10, 0, 0, 254})).ToBytes(),
		dhcptest.Msg(f, macA, dhcpv4.MessageTypeRequest, append(pxe, dhcptest.WithCiaddr("10.0.0.100"),
			dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, 0x80, 0, 0, 0, 255}))...).ToBytes(),
	)
	return seeds
}

// fuzzServers returns a full-mode and a proxy-mode server, each with one client
// holding a lease, and the inbound descriptions to drive them with.
func fuzzServers(t testing.TB) (full, proxy *harness) {
	full = newHarness(t, knownMachine())
	full.srv.MaxDeclinedPerSubnet = 2
	full.dora(macA)
	spec := resource.SubnetSpec{CIDR: "10.0.0.0/24", Mode: resource.ModeProxy, UnknownMachines: resource.UnknownDiscovery, DiscoveryProfile: "d"}
	proxy = newHarness(t, knownMachine(), mustSubnet(t, "lab", spec))
	return full, proxy
}

func FuzzHandlePacket(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, bootServerPort bool) {
		full, proxy := fuzzServers(t)
		in := full.in
		if bootServerPort {
			in.LocalPort, in.Src = PXEPort, netip.MustParseAddrPort("10.0.0.150:68")
		}
		_, parseErr := ParsePacket(b)
		before := full.leases.All()
		for _, h := range []*harness{full, proxy} {
			for range 2 { // twice: retransmissions must be harmless too
				r := h.srv.HandlePacket(context.Background(), b, in)
				if r == nil {
					continue
				}
				if parseErr != nil {
					t.Fatalf("answered a packet that does not parse (%v)", parseErr)
				}
				wire := r.Msg.ToBytes()
				if got := appendPacket(nil, r.Msg); !bytes.Equal(got, wire) {
					t.Fatalf("appendPacket differs from ToBytes:\n%x\n%x", got, wire)
				}
				out, err := dhcpv4.FromBytes(wire)
				if err != nil {
					t.Fatalf("reply does not decode: %v", err)
				}
				if out.OpCode != dhcpv4.OpcodeBootReply || !r.Dst.IsValid() {
					t.Fatalf("bad reply: op %v dst %v", out.OpCode, r.Dst)
				}
				if h == proxy && !out.YourIPAddr.IsUnspecified() {
					t.Fatalf("proxy reply with an address %s", out.YourIPAddr)
				}
			}
		}
		after := full.leases.All()
		if parseErr != nil && !reflect.DeepEqual(before, after) {
			t.Fatalf("a malformed packet changed the leases:\n%v\n%v", before, after)
		}
		if len(proxy.leases.All()) != 0 {
			t.Fatal("proxy mode created a lease")
		}
		sn := full.srv.Subnets.(StaticSubnets)[0]
		for _, l := range after {
			if !sn.Contains(l.IP) || !(sn.InPool(l.IP) || l.IP.String() == "10.0.0.20") {
				t.Fatalf("lease outside the pools and reservations: %+v", l)
			}
		}
	})
}

func FuzzParsePacket(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The server's decoder reads what the library's does.
		if len(b) >= minPacketSize && [4]byte(b[236:240]) == magicCookie {
			want, werr := dhcpv4.FromBytes(b)
			got, gerr := decodePacket(b)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("decodePacket error %v, FromBytes error %v", gerr, werr)
			}
			if werr == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("decodePacket differs from FromBytes:\n%+v\n%+v", got, want)
			}
		}
		m, err := ParsePacket(b)
		if err != nil {
			if m != nil {
				t.Fatal("message and error")
			}
			return
		}
		// What the server reads out of a parsed packet must not panic either.
		c := classify(m)
		_ = pxeBootItem(m)
		_ = c.Netboot()
		wire := m.ToBytes()
		if _, err := dhcpv4.FromBytes(wire); err != nil {
			t.Fatalf("re-encoded packet does not decode: %v", err)
		}
		// The server's encoder writes what the library's does, with the buffer
		// it is given kept as a prefix.
		if got := appendPacket([]byte("x"), m); !bytes.Equal(got[1:], wire) || got[0] != 'x' {
			t.Fatalf("appendPacket differs from ToBytes:\n%x\n%x", got[1:], wire)
		}
	})
}

func FuzzUserClassAndVendorClass(f *testing.F) {
	f.Add([]byte("iPXE"), "PXEClient:Arch:00007:UNDI:003016")
	f.Add([]byte{4, 'i', 'P', 'X', 'E'}, "HTTPClient:Arch:00016")
	f.Add([]byte{255, 1}, "PXEClient:Arch:99999999999")
	f.Fuzz(func(t *testing.T, uc []byte, vc string) {
		_ = isIPXE(uc)
		if a, ok := archFromVendorClass(vc); ok && uint64(a) > 0xffff {
			t.Fatal("arch out of range")
		}
	})
}
