//go:build linux

package dhcpstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// The tests in this file run real DHCP clients (ISC dhclient, busybox udhcpc, Kea's
// perfdhcp) in a network namespace of their own, joined by a veth pair to the test
// process, whose Server listens on the other end. Traffic never leaves the pair.

// udhcpc's signals (busybox udhcpc --help).
const (
	sigRenew   = syscall.SIGUSR1
	sigRelease = syscall.SIGUSR2
)

// requireNetns needs root (network namespaces) and ip plus tools; testkit applies
// the CI rule: a skip outside CI and under -short, a failure under CI=true.
func requireNetns(t *testing.T, tools ...string) {
	t.Helper()
	testkit.NeedRoot(t, "network namespaces")
	packages := map[string]string{"ip": "iproute2", "dhclient": "isc-dhcp-client", "busybox": "busybox-static",
		"perfdhcp": "kea-admin", "tcpdump": "tcpdump", "qemu-system-x86_64": "qemu-system-x86"}
	for _, tool := range append([]string{"ip"}, tools...) {
		testkit.NeedTool(t, tool, packages[tool])
	}
}

// labNet is a client namespace and a veth pair.
type labNet struct {
	ns     string
	hostIf string // in the test's namespace: the server's interface
	nsIf   string // in ns: the clients' interface
	server netip.Prefix
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newLabNet creates the namespace and the pair; names and the /24 derive from the
// process and the test name, so parallel test binaries do not collide. Everything
// is deleted when the test ends, also when it fails.
func newLabNet(t *testing.T) *labNet {
	t.Helper()
	id := crc32.ChecksumIEEE([]byte(t.Name())) % 1000
	pid := os.Getpid() % 1000
	n := &labNet{
		ns:     fmt.Sprintf("kiln-dhcp-%d-%d", pid, id),
		hostIf: fmt.Sprintf("kdh%03d%03d", pid, id),
		nsIf:   fmt.Sprintf("kdc%03d%03d", pid, id),
		server: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.1/24", 200+pid%50, id%250)),
	}
	cleanup := func() {
		_ = exec.Command("ip", "netns", "del", n.ns).Run() // takes the veth pair with it
		_ = exec.Command("ip", "link", "del", n.hostIf).Run()
	}
	cleanup() // left over from a killed run
	t.Cleanup(cleanup)
	run(t, "ip", "netns", "add", n.ns)
	run(t, "ip", "link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf, "netns", n.ns)
	run(t, "ip", "addr", "add", n.server.String(), "dev", n.hostIf)
	run(t, "ip", "link", "set", n.hostIf, "up")
	run(t, "ip", "-n", n.ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", n.ns, "link", "set", n.nsIf, "up")
	if dir := os.Getenv("KILN_DHCP_PCAP"); dir != "" {
		// For refreshing testdata/packets: capture what crosses the pair.
		pcap := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".pcap")
		cmd := exec.Command("tcpdump", "--immediate-mode", "-i", n.hostIf, "-U", "-s0", "-w", pcap, "udp port 67 or udp port 68 or udp port 4011")
		stderr, err := cmd.StderrPipe()
		if err == nil && cmd.Start() == nil {
			listening := make(chan struct{})
			go func() {
				b := make([]byte, 512)
				for {
					k, err := stderr.Read(b)
					if bytes.Contains(b[:k], []byte("listening on")) {
						close(listening)
						_, _ = io.Copy(io.Discard, stderr)
						return
					}
					if err != nil {
						return
					}
				}
			}()
			select {
			case <-listening:
			case <-time.After(5 * time.Second):
			}
			t.Cleanup(func() {
				time.Sleep(200 * time.Millisecond)
				_ = cmd.Process.Signal(os.Interrupt)
				_ = cmd.Wait()
			})
		}
	}
	return n
}

// addr returns the address n.server + i.
func (n *labNet) addr(i int) netip.Addr {
	a := n.server.Masked().Addr()
	for range i {
		a = a.Next()
	}
	return a
}

// clientMAC reads the MAC of the clients' interface.
func (n *labNet) clientMAC(t *testing.T) string {
	t.Helper()
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(run(t, "ip", "-j", "-n", n.ns, "link", "show", n.nsIf)), &links); err != nil || len(links) != 1 {
		t.Fatalf("read MAC of %s: %v", n.nsIf, err)
	}
	return links[0].Address
}

// testLogWriter sends the server's log to the test log.
type testLogWriter struct {
	t  *testing.T
	mu *sync.Mutex
}

func (w testLogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// startServer runs a Server on the store on n.hostIf until the test ends.
func startServer(t *testing.T, n *labNet, st store.Store, spec resource.SubnetSpec, level slog.Level) *dhcp.Server {
	t.Helper()
	srv := &dhcp.Server{
		Subnets:  dhcp.StaticSubnets{mustSubnet(t, "lab", spec)},
		Machines: &Machines{Store: st},
		Leases:   NewLeases(st, 0),
		Logger:   slog.New(slog.NewTextHandler(testLogWriter{t, &sync.Mutex{}}, &slog.HandlerOptions{Level: level})),
	}
	conn, err := dhcp.ListenUDP(context.Background(), n.hostIf, dhcp.ServerPort)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Background(t, "Serve", func(ctx context.Context) error { return srv.Serve(ctx, conn) })
	return srv
}

// waitFor polls cond until it holds or the timeout passes.
// startClient runs a DHCP client (argv) in the lab's namespace (`ip netns exec`
// execs it: the process is the client itself); stop kills it and, when the test
// failed, logs its output and the events its script wrote.
func (n *labNet) startClient(ctx context.Context, t *testing.T, events string, argv ...string) (cmd *exec.Cmd, stop func()) {
	t.Helper()
	var out bytes.Buffer
	cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s:\n%s\nscript events: %v", argv[0], out.String(), fileLines(events))
		}
	}
}

// leaseOf returns the stored lease of a MAC (the one expiring last).
func leaseOf(t *testing.T, st store.Store, hw string) *dhcp.Lease {
	var best *dhcp.Lease
	for _, l := range storedLeases(t, st) {
		if l.MAC.String() == hw && (best == nil || l.ExpiresAt.After(best.ExpiresAt)) {
			best = l
		}
	}
	return best
}

func labSpec(n *labNet, leaseTime string) resource.SubnetSpec {
	return resource.SubnetSpec{
		CIDR: n.server.Masked().String(), Mode: resource.ModeFull,
		Pools:  []resource.Pool{{Start: n.addr(10).String(), End: n.addr(250).String()}},
		Router: n.server.Addr().String(), DNS: []string{n.server.Addr().String()}, Domain: "e2e.example",
		LeaseTime: leaseTime, UnknownMachines: resource.UnknownAllocate,
	}
}

// fileLines reads a script's event log.
func fileLines(path string) []string {
	b, _ := os.ReadFile(path)
	return strings.Fields(strings.ReplaceAll(string(b), "\n", " | "))
}

func fileHas(path, word string) bool {
	b, _ := os.ReadFile(path)
	return bytes.Contains(b, []byte(word))
}

func TestDhclient(t *testing.T) {
	requireNetns(t, "dhclient")
	n := newLabNet(t)
	st := testkit.OpenSQLite(t, t.TempDir())
	srv := startServer(t, n, st, labSpec(n, "6s"), slog.LevelInfo) // T1 = 3 s: a renewal within the test
	hw := n.clientMAC(t)
	dir := t.TempDir()
	events := filepath.Join(dir, "events")
	// Not Debian's dhclient-script: it would rewrite the host's /etc/resolv.conf.
	script := `#!/bin/sh
echo "$reason $new_ip_address" >> ` + events + `
case "$reason" in
BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
EXPIRE|FAIL|RELEASE|STOP) [ -n "$old_ip_address" ] && ip addr del "$old_ip_address/$old_subnet_mask" dev "$interface" ;;
esac
exit 0
`
	writeFile(t, filepath.Join(dir, "script"), script, 0o755)
	writeFile(t, filepath.Join(dir, "conf"), `send host-name "e2e-dhclient";
request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, host-name, interface-mtu;
timeout 20;
`, 0o644)
	args := []string{"-4", "-cf", filepath.Join(dir, "conf"), "-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"), "-sf", filepath.Join(dir, "script")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, stop := n.startClient(ctx, t, events, append([]string{"dhclient", "-d", "-v"}, append(args, n.nsIf)...)...)
	defer stop()

	dhcptest.WaitFor(t, 20*time.Second, "dhclient BOUND", func() bool { return fileHas(events, "BOUND") })
	l := leaseOf(t, st, hw)
	if l == nil || l.State != resource.LeaseBound || !n.server.Contains(l.IP) || l.Hostname != "e2e-dhclient" {
		t.Fatalf("stored lease of %s: %+v", hw, l)
	}
	if !strings.Contains(run(t, "ip", "-n", n.ns, "addr", "show", n.nsIf), l.IP.String()+"/24") {
		t.Errorf("client interface does not have %s", l.IP)
	}
	first := l.ExpiresAt
	dhcptest.WaitFor(t, 20*time.Second, "dhclient RENEW", func() bool { return fileHas(events, "RENEW") })
	dhcptest.WaitFor(t, 5*time.Second, "renewed lease in the store", func() bool {
		l2 := leaseOf(t, st, hw)
		return l2.IP == l.IP && l2.ExpiresAt.After(first)
	})

	// dhclient -r stops the running client (pid file) and sends a RELEASE.
	rel := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns, "dhclient", "-r", "-v"}, append(args, n.nsIf)...)...)
	if b, err := rel.CombinedOutput(); err != nil {
		t.Fatalf("dhclient -r: %v\n%s", err, b)
	}
	dhcptest.WaitFor(t, 10*time.Second, "released lease", func() bool { return leaseOf(t, st, hw).State == resource.LeaseReleased })
	s := srv.Metrics.Snapshot()
	if s.Received["discover"] < 1 || s.Received["request"] < 2 || s.Received["release"] != 1 || s.Sent["ack"] < 2 {
		t.Errorf("server counters %+v", s)
	}
}

func TestUdhcpc(t *testing.T) {
	requireNetns(t, "busybox")
	n := newLabNet(t)
	st := testkit.OpenSQLite(t, t.TempDir())
	srv := startServer(t, n, st, labSpec(n, "1h"), slog.LevelInfo)
	hw := n.clientMAC(t)
	dir := t.TempDir()
	events := filepath.Join(dir, "events")
	writeFile(t, filepath.Join(dir, "script"), `#!/bin/sh
echo "$1 $ip" >> `+events+`
case "$1" in
bound|renew) ip addr replace "$ip/$subnet" dev "$interface" ;;
deconfig) ip addr flush dev "$interface" ;;
esac
exit 0
`, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, stop := n.startClient(ctx, t, events, "busybox", "udhcpc", "-f", "-i", n.nsIf,
		"-s", filepath.Join(dir, "script"), "-t", "5", "-T", "1", "-A", "1", "-x", "hostname:e2e-udhcpc")
	defer stop()
	dhcptest.WaitFor(t, 20*time.Second, "udhcpc bound", func() bool { return fileHas(events, "bound") })
	l := leaseOf(t, st, hw)
	if l == nil || l.State != resource.LeaseBound || l.Hostname != "e2e-udhcpc" {
		t.Fatalf("stored lease %+v", l)
	}
	time.Sleep(1100 * time.Millisecond) // let the clock move so the renewal shows
	_ = cmd.Process.Signal(sigRenew)
	dhcptest.WaitFor(t, 10*time.Second, "udhcpc renew", func() bool { return fileHas(events, "renew") })
	dhcptest.WaitFor(t, 5*time.Second, "renewed lease in the store", func() bool { return leaseOf(t, st, hw).ExpiresAt.After(l.ExpiresAt) })
	_ = cmd.Process.Signal(sigRelease)
	dhcptest.WaitFor(t, 10*time.Second, "released lease", func() bool { return leaseOf(t, st, hw).State == resource.LeaseReleased })
	if s := srv.Metrics.Snapshot(); s.Received["release"] != 1 {
		t.Errorf("server counters %+v", s)
	}
}

func TestPerfdhcp(t *testing.T) {
	requireNetns(t, "perfdhcp")
	n := newLabNet(t)
	st := testkit.OpenSQLite(t, t.TempDir())
	srv := startServer(t, n, st, labSpec(n, "1h"), slog.LevelWarn)
	// perfdhcp acts as a relay: giaddr is its own address, replies go to giaddr:67.
	clientAddr := n.addr(2)
	run(t, "ip", "-n", n.ns, "addr", "add", clientAddr.String()+"/24", "dev", n.nsIf)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// 200 DORA exchanges among 150 simulated clients at 100/s; at most 20 s.
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.ns, "perfdhcp", "-4", "-l", n.nsIf,
		"-r", "100", "-R", "150", "-n", "200", "-p", "20", "-W", "1000000", n.server.Addr().String())
	out, err := cmd.CombinedOutput()
	t.Logf("perfdhcp:\n%s", out)
	if err != nil && ctx.Err() != nil {
		t.Fatalf("perfdhcp did not finish: %v", err)
	}
	stats := parsePerfdhcp(string(out))
	if stats["sent DISCOVER"] == 0 || stats["received ACK"] == 0 {
		t.Fatalf("perfdhcp exchanged nothing: %v", stats)
	}
	// Every exchange completed (perfdhcp counts drops of both stages).
	if stats["drops OFFER"] != 0 || stats["drops ACK"] != 0 {
		t.Errorf("perfdhcp saw drops: %v", stats)
	}
	// Every client that got an ACK holds one bound lease, and no address has two MACs.
	byMAC := map[string]netip.Addr{}
	byIP := map[netip.Addr]string{}
	for _, l := range storedLeases(t, st) {
		if l.State != resource.LeaseBound {
			continue
		}
		if ip, dup := byMAC[l.MAC.String()]; dup {
			t.Errorf("%s holds %s and %s", l.MAC, ip, l.IP)
		}
		if m, dup := byIP[l.IP]; dup {
			t.Errorf("%s leased to %s and %s", l.IP, m, l.MAC)
		}
		byMAC[l.MAC.String()], byIP[l.IP] = l.IP, l.MAC.String()
	}
	if len(byMAC) == 0 || len(byMAC) > 150 {
		t.Errorf("%d clients hold leases", len(byMAC))
	}
	s := srv.Metrics.Snapshot()
	t.Logf("server: %+v; %d distinct clients hold leases", s, len(byMAC))
	if int(s.Sent["ack"]) < stats["received ACK"] {
		t.Errorf("perfdhcp received %d ACKs, the server sent %d", stats["received ACK"], s.Sent["ack"])
	}
}

// parsePerfdhcp reads the counters of perfdhcp's "***Statistics for: DISCOVER-OFFER***"
// and "REQUEST-ACK" sections as "sent DISCOVER", "received OFFER", "drops OFFER",
// "sent REQUEST", "received ACK", "drops ACK".
func parsePerfdhcp(out string) map[string]int {
	stats := map[string]int{}
	var sentType, recvType string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.Contains(line, "Statistics for: DISCOVER-OFFER"):
			sentType, recvType = "DISCOVER", "OFFER"
		case strings.Contains(line, "Statistics for: REQUEST-ACK"):
			sentType, recvType = "REQUEST", "ACK"
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || sentType == "" {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d", &n); err != nil {
			continue
		}
		switch strings.TrimSpace(k) {
		case "sent packets":
			stats["sent "+sentType] = n
		case "received packets":
			stats["received "+recvType] = n
		case "drops":
			stats["drops "+recvType] = n
		}
	}
	return stats
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
