package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kilnhq/kiln/internal/testkit"
)

// The test network: one bridge in a fresh namespace, Kiln's address on it, one tap
// per VM. Nothing of it is visible outside the namespace.
const (
	bridgeName = "br0"
	// bridgeMAC is fixed: a bridge otherwise takes the lowest MAC of its ports, and
	// the router advertisements name the sender's link-layer address.
	bridgeMAC = "02:77:00:00:00:01"
	kilnIP    = "10.77.0.1"
	kilnCIDR  = kilnIP + "/24"
	kilnIPv6  = "fd77::1/64"
	kilnHTTP  = kilnIP + ":8080"
	kilnURL   = "http://" + kilnHTTP
	// peerIP is a second host on the link (dnsmasq), in its own namespace.
	peerIP = "10.77.0.2"
)

// lab is one test's network namespace with its bridge.
type lab struct {
	t      *testing.T
	ns     string
	nsPath string
	dir    string

	mu   sync.Mutex
	taps int
	peer string // the peer namespace, once made
}

// newLab makes the namespace, the bridge with Kiln's addresses, and starts router
// advertisements on it; everything is removed when the test ends, also on failure.
func newLab(t *testing.T) *lab {
	t.Helper()
	requireLab(t)
	l := &lab{t: t, ns: fmt.Sprintf("kiln-e2e-%08x", rand.Uint32()), dir: t.TempDir()}
	l.nsPath = filepath.Join("/run/netns", l.ns)
	l.run("ip", "netns", "add", l.ns)
	// Cleanups run last-registered first: this one, registered first, runs after
	// every process in the namespace has been stopped.
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", l.ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", l.ns, err, out)
		}
		l.keepLogs()
	})
	l.ip("link", "set", "lo", "up")
	// No duplicate address detection in this namespace: the bridge's link-local
	// address, the source of the router advertisements, is usable at once.
	l.nsRun("sh", "-c", "echo 0 >/proc/sys/net/ipv6/conf/default/accept_dad && echo 0 >/proc/sys/net/ipv6/conf/all/accept_dad")
	l.ip("link", "add", bridgeName, "address", bridgeMAC, "type", "bridge")
	l.ip("addr", "add", kilnCIDR, "dev", bridgeName)
	l.ip("addr", "add", kilnIPv6, "dev", bridgeName, "nodad")
	l.ip("link", "set", bridgeName, "up")
	l.startCapture()
	l.startRouterAdvertisements()
	return l
}

// startCapture records the bridge's traffic with tcpdump, when it is installed, and
// prints a summary if the test fails (or KILN_E2E_VERBOSE is set): the DHCP, TFTP and
// ND exchanges are the first thing to look at when a boot goes wrong.
func (l *lab) startCapture() {
	l.t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		return
	}
	pcap := filepath.Join(l.dir, "br0.pcap")
	cmd := l.nsCommand(context.Background(), "tcpdump", "-i", bridgeName, "-n", "-U", "-s", "512", "-w", pcap,
		// DHCP, TFTP, ARP and router solicitations; HTTP is in Kiln's log, and the
		// advertisements this lab sends every second would drown the rest.
		"arp or (udp and not port 8080) or (icmp6 and ip6[40] == 133)")
	logf, err := os.Create(pcap + ".log")
	if err != nil {
		l.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		l.t.Logf("tcpdump: %v (no capture)", err)
		return
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	// tcpdump says "listening on" once it captures.
	for i := 0; i < 100; i++ {
		if b, _ := os.ReadFile(pcap + ".log"); bytes.Contains(b, []byte("listening on")) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.t.Cleanup(func() {
		stopProcess(cmd, done, 5*time.Second)
		if l.t.Failed() || os.Getenv("KILN_E2E_VERBOSE") != "" {
			out, _ := exec.Command("tcpdump", "-n", "-tttt", "-r", pcap).CombinedOutput()
			summary := filepath.Join(l.dir, "br0.pcap.txt")
			_ = os.WriteFile(summary, out, 0o600)
			l.t.Logf("traffic on %s except HTTP (%s):\n%s", bridgeName, pcap, tail(summary, 80))
		}
	})
}

// keepLogs copies the test's logs, serial consoles and capture to
// $KILN_E2E_ARTIFACTS/<test name>/ when that is set (CI keeps them), before the
// temporary directory goes away.
func (l *lab) keepLogs() {
	dest := os.Getenv("KILN_E2E_ARTIFACTS")
	if dest == "" {
		return
	}
	dest = filepath.Join(dest, strings.ReplaceAll(l.t.Name(), "/", "_"))
	err := filepath.WalkDir(l.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(l.dir, path)
		switch {
		case d.IsDir() && (rel == "artifacts" || rel == "kiln-data"):
			return filepath.SkipDir // boot files and the database: large, and rebuilt
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dest, rel), 0o755)
		case strings.HasSuffix(rel, ".fd") || strings.HasSuffix(rel, ".img"):
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dest, rel), b, 0o644)
	})
	if err != nil {
		l.t.Logf("keep logs in %s: %v", dest, err)
	}
}

// run runs a host command; failure ends the test.
func (l *lab) run(name string, args ...string) string {
	l.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ip runs `ip -n NS ...`.
func (l *lab) ip(args ...string) string {
	l.t.Helper()
	return l.run("ip", append([]string{"-n", l.ns}, args...)...)
}

// nsRun runs a command inside the namespace.
func (l *lab) nsRun(args ...string) string {
	l.t.Helper()
	return l.run("ip", append([]string{"netns", "exec", l.ns}, args...)...)
}

// nsCommand is a command to start inside the namespace; `ip netns exec` execs it,
// so the process's PID is the command's own.
func (l *lab) nsCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns}, args...)...)
	cmd.Env = testkit.CleanEnv()
	cmd.WaitDelay = 5 * time.Second
	// If the test binary dies (a -timeout panic skips cleanups), its servers and VMs
	// die with it rather than run on.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// addTap adds a tap device on the bridge for one VM.
func (l *lab) addTap() string {
	l.t.Helper()
	l.mu.Lock()
	name := fmt.Sprintf("tap%d", l.taps)
	l.taps++
	l.mu.Unlock()
	l.nsRun("ip", "tuntap", "add", "dev", name, "mode", "tap")
	l.ip("link", "set", name, "master", bridgeName)
	l.ip("link", "set", name, "up")
	return name
}

// addPeer makes a second host on the link: its own namespace, joined to the bridge by
// a veth pair, with peerIP. A peer DHCP server runs there as it would on another
// machine (its own sockets on port 67, not sharing Kiln's).
func (l *lab) addPeer() string {
	l.t.Helper()
	peer := l.ns + "-peer"
	l.run("ip", "netns", "add", peer)
	l.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", peer).CombinedOutput(); err != nil {
			l.t.Errorf("ip netns del %s: %v: %s", peer, err, out)
		}
	})
	l.run("ip", "-n", peer, "link", "set", "lo", "up")
	l.ip("link", "add", "vpeer0", "type", "veth", "peer", "name", "vpeer1", "netns", peer)
	l.ip("link", "set", "vpeer0", "master", bridgeName)
	l.ip("link", "set", "vpeer0", "up")
	l.run("ip", "-n", peer, "addr", "add", peerIP+"/24", "dev", "vpeer1")
	l.run("ip", "-n", peer, "link", "set", "vpeer1", "up")
	l.peer = peer
	return peer
}

// inNetns runs fn on an OS thread that has joined the namespace. Sockets fn opens
// stay in the namespace after the thread leaves it. If the thread cannot return to
// its own namespace it stays locked and exits with its goroutine.
func (l *lab) inNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(l.nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", l.ns, err)
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// httpClient reaches addresses inside the namespace (Kiln's API) from the test.
func (l *lab) httpClient() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := l.inNetns(func() (err error) {
			c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true},
		Timeout:   15 * time.Second,
	}
}

// startRouterAdvertisements answers router solicitations on the bridge and repeats
// an advertisement every second. iPXE configures IPv6 beside DHCPv4 and, if no
// router advertisement comes, waits ~16 s for one before it goes on (NETBOOT-LAB.md).
// The advertisement carries no M/O flags (nothing for DHCPv6), no prefix and a
// router lifetime of 0 (not a default router): iPXE's IPv6 configuration then ends
// at once, with nothing configured.
func (l *lab) startRouterAdvertisements() {
	l.t.Helper()
	var fd, ifindex int
	err := l.inNetns(func() error {
		ifc, err := net.InterfaceByName(bridgeName)
		if err != nil {
			return err
		}
		ifindex = ifc.Index
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		return err
	})
	if err != nil {
		l.t.Fatalf("router advertisements: raw ICMPv6 socket in %s: %v", l.ns, err)
	}
	for _, o := range []struct {
		name  string
		level int
		opt   int
		val   int
	}{
		// RFC 4861 section 6.1.2: hosts drop NDP messages whose hop limit is not 255.
		{"IPV6_MULTICAST_HOPS", unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255},
		{"IPV6_UNICAST_HOPS", unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, 255},
		{"IPV6_MULTICAST_IF", unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifindex},
		{"IPV6_MULTICAST_LOOP", unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			l.t.Fatalf("router advertisements: %s: %v", o.name, err)
		}
	}
	// Router solicitations go to ff02::2, which a host that does not forward has not
	// joined.
	mreq := &unix.IPv6Mreq{Interface: uint32(ifindex)}
	copy(mreq.Multiaddr[:], net.ParseIP("ff02::2").To16())
	if err := unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq); err != nil {
		unix.Close(fd)
		l.t.Fatalf("router advertisements: join ff02::2: %v", err)
	}
	f := os.NewFile(uintptr(fd), "icmpv6")
	conn, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		l.t.Fatalf("router advertisements: %v", err)
	}

	mac, _ := net.ParseMAC(bridgeMAC)
	ra := []byte{
		134, 0, 0, 0, // type: router advertisement, code, checksum (the kernel fills it in)
		64,   // current hop limit
		0,    // flags: no M (managed), no O (other configuration)
		0, 0, // router lifetime 0: not a default router
		0, 0, 0, 0, // reachable time: unspecified
		0, 0, 0, 0, // retransmission timer: unspecified
		1, 1, // option: source link-layer address, 1 x 8 bytes
	}
	ra = append(ra, mac...)
	allNodes := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: fmt.Sprint(ifindex)}
	send := func() { _, _ = conn.WriteTo(ra, allNodes) } // fails until the bridge has a carrier

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			if n > 0 && buf[0] == 133 { // router solicitation
				send()
			}
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				send()
			}
		}
	}()
	l.t.Cleanup(func() {
		cancel()
		conn.Close()
		wg.Wait()
	})
}

// stopProcess ends a child by its PID: SIGTERM, then SIGKILL after grace.
func stopProcess(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) {
	if cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// tail is the last n lines of a file, without terminal escapes.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	b = stripANSI(b)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// stripANSI removes the escape sequences iPXE and SeaBIOS write to the serial port,
// and carriage returns.
func stripANSI(b []byte) []byte {
	var out bytes.Buffer
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == 0x1b && i+1 < len(b) && b[i+1] == '[':
			j := i + 2
			for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == ';' || b[j] == '?') {
				j++
			}
			i = j // the final byte
		case b[i] == 0x1b:
			i++ // a two-byte sequence such as ESC c
		case b[i] == '\r':
		default:
			out.WriteByte(b[i])
		}
	}
	return out.Bytes()
}
