package dhcp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/resource"
)

var update = flag.Bool("update", false, "rewrite the .golden files of testdata/packets")

// capture is one client datagram from testdata/packets/NAME.hex: "# key: value"
// header lines (source, server, port), then the UDP payload in hex.
type capture struct {
	name   string
	header map[string]string
	raw    []byte
}

func loadCaptures(tb testing.TB) []capture {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "packets", "*.hex"))
	if err != nil {
		tb.Fatal(err)
	}
	var out []capture
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		c := capture{name: strings.TrimSuffix(filepath.Base(f), ".hex"), header: map[string]string{}}
		var hx strings.Builder
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if k, v, ok := strings.Cut(strings.TrimPrefix(line, "#"), ":"); ok && strings.HasPrefix(line, "#") {
				c.header[strings.TrimSpace(k)] = strings.TrimSpace(v)
				continue
			}
			hx.WriteString(strings.ReplaceAll(line, " ", ""))
		}
		if c.raw, err = hex.DecodeString(hx.String()); err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		out = append(out, c)
	}
	return out
}

// describe renders a message deterministically: header fields and every option.
func describe(w *strings.Builder, m *dhcpv4.DHCPv4) {
	fmt.Fprintf(w, "  op %d htype %d hops %d flags %#04x xid %s secs %d\n", m.OpCode, m.HWType, m.HopCount, m.Flags, m.TransactionID, m.NumSeconds)
	fmt.Fprintf(w, "  chaddr %s ciaddr %s yiaddr %s siaddr %s giaddr %s\n", m.ClientHWAddr, m.ClientIPAddr, m.YourIPAddr, m.ServerIPAddr, m.GatewayIPAddr)
	if m.ServerHostName != "" || m.BootFileName != "" {
		fmt.Fprintf(w, "  sname %q file %q\n", m.ServerHostName, m.BootFileName)
	}
	codes := make([]int, 0, len(m.Options))
	for c := range m.Options {
		codes = append(codes, int(c))
	}
	slices.Sort(codes)
	for _, c := range codes {
		v := m.Options[uint8(c)]
		fmt.Fprintf(w, "  option %3d %x\n", c, v)
	}
}

// TestGoldenCaptures decodes real client packets (captured from dhclient, udhcpc,
// perfdhcp and QEMU's firmware; see the header of each file) and compares what
// Kiln reads out of them and answers with the checked-in .golden file. Run with
// -update to rewrite the expectations after an intended change; see
// capture_import_test.go for refreshing the captures themselves.
func TestGoldenCaptures(t *testing.T) {
	caps := loadCaptures(t)
	if len(caps) == 0 {
		t.Fatal("no captures in testdata/packets")
	}
	for _, c := range caps {
		t.Run(c.name, func(t *testing.T) {
			var w strings.Builder
			fmt.Fprintf(&w, "capture %s (%s)\n", c.name, c.header["source"])
			m, err := ParsePacket(c.raw)
			if err != nil {
				t.Fatalf("a real client's packet does not parse: %v", err)
			}
			fmt.Fprintf(&w, "request %s, %d bytes:\n", m.MessageType(), len(c.raw))
			describe(&w, m)
			cl := classify(m)
			fmt.Fprintf(&w, "class: arch %d (known %v) pxe %v http %v ipxe %v vendor %q uuid %x\n",
				cl.Arch, cl.HasArch, cl.PXE, cl.HTTP, cl.IPXE, cl.VendorClass, cl.UUID)

			// The reply of a server on the capture's network, in full and proxy mode,
			// with no lease on record yet.
			server := netip.MustParsePrefix(c.header["server"])
			for _, mode := range []string{resource.ModeFull, resource.ModeProxy} {
				spec := resource.SubnetSpec{CIDR: server.Masked().String(), Mode: mode, UnknownMachines: resource.UnknownAllocate}
				if mode == resource.ModeFull {
					first := server.Masked().Addr()
					for range 100 {
						first = first.Next()
					}
					last := first
					for range 100 {
						last = last.Next()
					}
					spec.Pools = []resource.Pool{{Start: first.String(), End: last.String()}}
					spec.LeaseTime = "1h"
				}
				h := newHarness(t, nil, mustSubnet(t, "lab", spec))
				h.in.IfaceAddrs = []netip.Prefix{server}
				if p := c.header["port"]; p == "4011" {
					h.in.LocalPort = PXEPort
					h.in.Src = netip.MustParseAddrPort(c.header["src"])
				}
				r := h.srv.HandlePacket(context.Background(), c.raw, h.in)
				if r == nil {
					snap := h.srv.Metrics.Snapshot()
					fmt.Fprintf(&w, "%s mode: no reply (dropped %v)\n", mode, snap.Dropped)
					continue
				}
				fmt.Fprintf(&w, "%s mode: %s to %s:\n", mode, r.Msg.MessageType(), r.Dst)
				describe(&w, r.Msg)
			}
			got := w.String()
			golden := filepath.Join("testdata", "packets", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGoldenCaptures -update)", err)
			}
			if got != string(want) {
				t.Errorf("differs from %s (go test -run TestGoldenCaptures -update rewrites it):\n--- got\n%s\n--- want\n%s", golden, got, want)
			}
		})
	}
}
