package dhcp

import (
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Refreshing testdata/packets:
//
//	mkdir /tmp/pcaps
//	KILN_E2E_QEMU=1 KILN_DHCP_PCAP=/tmp/pcaps go test ./internal/dhcp/ -run 'Dhclient|Udhcpc|Perfdhcp|QEMU'
//	go test ./internal/dhcp/ -run TestImportCaptures -pcaps=/tmp/pcaps
//	go test ./internal/dhcp/ -run TestGoldenCaptures -update
var pcapDir = flag.String("pcaps", "", "import the first client packet of each kind from the pcap files of this directory into testdata/packets")

// pcapSources names the captures the e2e tests write and what ran in them.
var pcapSources = []struct{ file, prefix, source string }{
	{"TestDhclient.pcap", "dhclient", "ISC dhclient 4.4.3-P1 (Debian 12) in a network namespace, captured with tcpdump"},
	{"TestUdhcpc.pcap", "udhcpc", "busybox udhcpc 1.35.0 (Debian 12) in a network namespace, captured with tcpdump"},
	{"TestPerfdhcp.pcap", "perfdhcp", "Kea perfdhcp 2.2.0 (Debian 12) acting as a relay, captured with tcpdump"},
	{"TestQEMUFirmware_bios-ipxe-full.pcap", "ipxe-bios", "iPXE option ROM of QEMU (Debian ipxe-qemu) on SeaBIOS, virtio-net, captured with tcpdump"},
	{"TestQEMUFirmware_uefi-pxe-proxy.pcap", "ovmf-pxe", "OVMF (Debian ovmf) UEFI PXE, virtio-net without option ROM, captured with tcpdump"},
}

type udpPacket struct {
	src, dst netip.AddrPort
	payload  []byte
}

// readPcap returns the IPv4/UDP datagrams of an Ethernet pcap file.
func readPcap(path string) ([]udpPacket, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 {
		return nil, fmt.Errorf("%s: not a little-endian microsecond pcap file", path)
	}
	var out []udpPacket
	for off := 24; off+16 <= len(b); {
		n := int(binary.LittleEndian.Uint32(b[off+8:]))
		off += 16
		if off+n > len(b) {
			break
		}
		frame := b[off : off+n]
		off += n
		if len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
			continue
		}
		ip := frame[14:]
		ihl := int(ip[0]&15) * 4
		if ip[9] != 17 || len(ip) < ihl+8 {
			continue
		}
		udp := ip[ihl:]
		ulen := int(binary.BigEndian.Uint16(udp[4:]))
		if ulen < 8 || ulen > len(udp) {
			continue
		}
		out = append(out, udpPacket{
			src:     netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(udp[0:])),
			dst:     netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(udp[2:])),
			payload: udp[8:ulen],
		})
	}
	return out, nil
}

// captureKind names a client packet: discover, request-selecting, bootserver-request ...
func captureKind(m *dhcpv4.DHCPv4, dstPort uint16) string {
	t := strings.ToLower(m.MessageType().String())
	if m.MessageType() != dhcpv4.MessageTypeRequest {
		return t
	}
	switch {
	case dstPort == PXEPort:
		return "bootserver-request"
	case m.Options.Has(dhcpv4.OptionServerIdentifier):
		return "request-selecting"
	case !m.ClientIPAddr.IsUnspecified():
		return "request-renewing"
	default:
		return "request-init-reboot"
	}
}

func TestImportCaptures(t *testing.T) {
	if *pcapDir == "" {
		t.Skip("run with -pcaps DIR to import captures into testdata/packets")
	}
	for _, src := range pcapSources {
		pkts, err := readPcap(filepath.Join(*pcapDir, src.file))
		if err != nil {
			t.Logf("skipping %s: %v", src.file, err)
			continue
		}
		var server netip.Addr
		for _, p := range pkts {
			if p.src.Port() == ServerPort && len(p.payload) > 0 && p.payload[0] == 2 {
				server = p.src.Addr()
			}
		}
		seen := map[string]bool{}
		for _, p := range pkts {
			port := p.dst.Port()
			if port != ServerPort && port != PXEPort {
				continue
			}
			m, err := ParsePacket(p.payload)
			if err != nil {
				continue
			}
			name := src.prefix + "-" + captureKind(m, port)
			if seen[name] {
				continue
			}
			seen[name] = true
			var w strings.Builder
			fmt.Fprintf(&w, "# source: %s\n# server: %s/24\n# port: %d\n", src.source, server, port)
			if port == PXEPort {
				fmt.Fprintf(&w, "# src: %s\n", p.src)
			}
			h := hex.EncodeToString(p.payload)
			for i := 0; i < len(h); i += 64 {
				w.WriteString(h[i:min(i+64, len(h))] + "\n")
			}
			if err := os.WriteFile(filepath.Join("testdata", "packets", name+".hex"), []byte(w.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("imported %s (%d bytes)", name, len(p.payload))
		}
	}
}
