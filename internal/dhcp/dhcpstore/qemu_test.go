//go:build linux

package dhcpstore

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
)

// nilBooter gives no boot information: a plain DHCP server.
type nilBooter struct{}

func (nilBooter) BootInfo(context.Context, dhcp.BootRequest) (*dhcp.BootInfo, error) { return nil, nil }

// eventLog collects a server's events.
type eventLog struct {
	mu     sync.Mutex
	events []dhcp.Event
}

func (l *eventLog) add(_ context.Context, e dhcp.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) has(typ, substr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Type == typ && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

// serve runs srv on n.hostIf (port 67, and the PXE port when pxe) until the test ends.
func serveOn(t *testing.T, n *labNet, srv *dhcp.Server, pxe bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ports := []int{dhcp.ServerPort}
	if pxe {
		ports = append(ports, dhcp.PXEPort)
	}
	var wg sync.WaitGroup
	for _, p := range ports {
		conn, err := dhcp.ListenUDP(ctx, n.hostIf, p)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.Serve(ctx, conn) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// startQEMU boots a VM on a tap bridged to the clients' side of n, until the test ends.
func startQEMU(t *testing.T, n *labNet, args ...string) *bytes.Buffer {
	t.Helper()
	run(t, "ip", "-n", n.ns, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", n.ns, "link", "set", n.nsIf, "master", "br0")
	run(t, "ip", "netns", "exec", n.ns, "ip", "tuntap", "add", "dev", "tap0", "mode", "tap")
	run(t, "ip", "-n", n.ns, "link", "set", "tap0", "master", "br0")
	run(t, "ip", "-n", n.ns, "link", "set", "tap0", "up")
	run(t, "ip", "-n", n.ns, "link", "set", "br0", "up")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var out bytes.Buffer
	base := []string{"netns", "exec", n.ns, "qemu-system-x86_64", "-cpu", "max", "-m", "256", "-smp", "1",
		"-nographic", "-no-reboot", "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"}
	cmd := exec.CommandContext(ctx, "ip", append(base, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("QEMU console:\n%s", out.String())
		}
	})
	return &out
}

// TestQEMUFirmware boots QEMU's firmware against the server: SeaBIOS with iPXE
// (full mode: iPXE gets the boot script URL) and OVMF's own PXE stack (proxy mode
// beside a plain DHCP server: OVMF takes the address from one and the boot file
// from the PXE boot server port of the other). It takes about a minute under
// TCG, so it runs only with KILN_E2E_QEMU=1.
func TestQEMUFirmware(t *testing.T) {
	if os.Getenv("KILN_E2E_QEMU") != "1" {
		t.Skip("set KILN_E2E_QEMU=1 to boot QEMU firmware (about a minute without KVM)")
	}
	requireNetns(t, "qemu-system-x86_64")
	const vmMAC = "52:54:00:12:34:56"
	logger := func() *slog.Logger {
		return slog.New(slog.NewTextHandler(testLogWriter{t, &sync.Mutex{}}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}

	t.Run("bios-ipxe-full", func(t *testing.T) {
		n := newLabNet(t)
		st := testkit.OpenSQLite(t, t.TempDir())
		var ev eventLog
		srv := &dhcp.Server{Subnets: dhcp.StaticSubnets{mustSubnet(t, "lab", labSpec(n, "1h"))}, Machines: &Machines{Store: st},
			Leases: NewLeases(st, 0), Logger: logger(), OnEvent: ev.add}
		serveOn(t, n, srv, false)
		startQEMU(t, n, "-machine", "pc,accel=tcg", "-device", "virtio-net-pci,netdev=n0,mac="+vmMAC, "-boot", "n")
		dhcptest.WaitFor(t, 90*time.Second, "iPXE to get the boot script", func() bool { return ev.has(dhcp.EventAck, "boot.ipxe") })
		if l := leaseOf(t, st, vmMAC); l == nil || l.State != resource.LeaseBound {
			t.Errorf("lease %+v", l)
		}
	})

	t.Run("uefi-pxe-proxy", func(t *testing.T) {
		// Debian package ovmf.
		testkit.NeedFiles(t, "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")
		n := newLabNet(t)
		vars := filepath.Join(t.TempDir(), "vars.fd")
		b, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS_4M.fd")
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, vars, string(b), 0o644)
		// Another DHCP server owns the addresses (a Kiln server without boot
		// information stands in for it); Kiln in proxy mode adds the boot file.
		dhcpd := &dhcp.Server{Subnets: dhcp.StaticSubnets{mustSubnet(t, "lab", labSpec(n, "1h"))}, Leases: dhcp.NewMemoryLeases(),
			Booter: nilBooter{}, Logger: logger()}
		serveOn(t, n, dhcpd, false)
		spec := resource.SubnetSpec{CIDR: n.server.Masked().String(), Mode: resource.ModeProxy, UnknownMachines: resource.UnknownAllocate}
		var ev eventLog
		proxy := &dhcp.Server{Subnets: dhcp.StaticSubnets{mustSubnet(t, "lab", spec)}, Logger: logger(), OnEvent: ev.add}
		serveOn(t, n, proxy, true)
		startQEMU(t, n, "-machine", "q35,accel=tcg",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
			"-drive", "if=pflash,format=raw,unit=1,file="+vars,
			// romfile= disables the NIC's iPXE ROM: OVMF's own PXE stack boots.
			"-device", "virtio-net-pci,netdev=n0,mac="+vmMAC+",romfile=,bootindex=1")
		dhcptest.WaitFor(t, 100*time.Second, "OVMF to ask the PXE boot server", func() bool { return ev.has(dhcp.EventAck, "PXE boot server, boot ipxe.efi") })
		if s := proxy.Metrics.Snapshot(); s.Sent["offer"] == 0 {
			t.Errorf("proxy counters %+v", s)
		}
	})
}
