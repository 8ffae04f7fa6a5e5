//go:build linux

package dhcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"

	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
)

// sockopts reads the options ListenUDP promises from conn's socket.
type sockopts struct {
	reuseAddr, broadcast, pktInfo int
	device                        string
}

func readSockopts(t *testing.T, conn *net.UDPConn) sockopts {
	t.Helper()
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var o sockopts
	var errs []error
	if err := rc.Control(func(fd uintptr) {
		get := func(level, opt int) int {
			v, err := unix.GetsockoptInt(int(fd), level, opt)
			errs = append(errs, err)
			return v
		}
		o.reuseAddr = get(unix.SOL_SOCKET, unix.SO_REUSEADDR)
		o.broadcast = get(unix.SOL_SOCKET, unix.SO_BROADCAST)
		o.pktInfo = get(unix.IPPROTO_IP, unix.IP_PKTINFO)
		var err error
		o.device, err = unix.GetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
		errs = append(errs, err)
	}); err != nil {
		t.Fatal(err)
	}
	for _, err := range errs {
		if err != nil {
			t.Fatalf("getsockopt: %v", err)
		}
	}
	return o
}

// TestListenUDPSocketOptions: the socket ListenUDP returns has SO_REUSEADDR,
// SO_BROADCAST and IP_PKTINFO on and is bound to the interface named; an
// interface that does not exist is an error, not a socket on all interfaces.
func TestListenUDPSocketOptions(t *testing.T) {
	for _, tt := range []struct {
		iface string
		want  sockopts
	}{
		{"", sockopts{1, 1, 1, ""}},
		{"lo", sockopts{1, 1, 1, "lo"}},
	} {
		t.Run("iface="+tt.iface, func(t *testing.T) {
			conn, err := ListenUDP(context.Background(), tt.iface, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got := readSockopts(t, conn); got != tt.want {
				t.Errorf("socket options %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("no such interface", func(t *testing.T) {
		conn, err := ListenUDP(context.Background(), "kiln-nosuch0", 0)
		if err == nil {
			conn.Close()
			t.Fatal("listening on an interface that does not exist succeeded")
		}
		if !strings.Contains(err.Error(), "interface kiln-nosuch0") {
			t.Errorf("error %q does not name the interface", err)
		}
	})
}

// TestEnablePktInfo: Serve turns IP_PKTINFO on also on a socket that was opened
// without it.
func TestEnablePktInfo(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := readSockopts(t, conn).pktInfo; got != 0 {
		t.Fatalf("IP_PKTINFO %d before", got)
	}
	if err := enablePktInfo(conn); err != nil {
		t.Fatal(err)
	}
	if got := readSockopts(t, conn).pktInfo; got != 1 {
		t.Errorf("IP_PKTINFO %d after enablePktInfo, want 1", got)
	}
}

// TestPktInfo: the control message names the interface and the source address
// given, and is nil when there is neither.
func TestPktInfo(t *testing.T) {
	for _, tt := range []struct {
		ifindex int
		from    netip.Addr
		wantNil bool
		wantSrc netip.Addr // unspecified when from is invalid
	}{
		{0, netip.Addr{}, true, netip.Addr{}},
		{-1, netip.Addr{}, true, netip.Addr{}},
		{1, netip.Addr{}, false, netip.IPv4Unspecified()},
		{0, netip.MustParseAddr("10.0.0.1"), false, netip.MustParseAddr("10.0.0.1")},
		{3, netip.MustParseAddr("10.0.0.1"), false, netip.MustParseAddr("10.0.0.1")},
	} {
		b := pktInfo(tt.ifindex, tt.from)
		if tt.wantNil {
			if b != nil {
				t.Errorf("pktInfo(%d, %v) = %x, want nil", tt.ifindex, tt.from, b)
			}
			continue
		}
		if got := parsePktInfo(b); got != tt.ifindex {
			t.Errorf("pktInfo(%d, %v): interface %d", tt.ifindex, tt.from, got)
		}
		msgs, err := unix.ParseSocketControlMessage(b)
		if err != nil || len(msgs) != 1 || len(msgs[0].Data) < unix.SizeofInet4Pktinfo {
			t.Fatalf("pktInfo(%d, %v) = %x: %v", tt.ifindex, tt.from, b, err)
		}
		// struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
		if src := netip.AddrFrom4([4]byte(msgs[0].Data[4:8])); src != tt.wantSrc {
			t.Errorf("pktInfo(%d, %v): source %v, want %v", tt.ifindex, tt.from, src, tt.wantSrc)
		}
	}
}

// TestSetReadBuffer: as root, the receive buffer is the size asked for, also
// beyond net.core.rmem_max (SO_RCVBUFFORCE), not capped at it.
func TestSetReadBuffer(t *testing.T) {
	testkit.NeedRoot(t, "SO_RCVBUFFORCE")
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		testkit.Missing(t, "/proc/sys/net/core/rmem_max: %v", err)
	}
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// The kernel doubles what it is given (bookkeeping); SO_RCVBUF alone would
	// stop at 2*rmem_max, below n.
	n := 2*rmemMax + 4096
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	setReadBuffer(conn, n)
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	_ = rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	if got < n {
		t.Errorf("receive buffer %d bytes, want at least %d (rmem_max %d)", got, n, rmemMax)
	}
}

// TestServeReplySource runs Serve on loopback as TestServeLoopback does, and checks
// where the reply comes from: the receiving interface's address when the server
// identifier is one of them, else the address the kernel picks (a server
// identifier the host does not have must not make the send fail), and that a
// reply sent is not counted as a send error. The interface is found through
// IP_PKTINFO also on a socket not opened by ListenUDP.
func TestServeReplySource(t *testing.T) {
	for _, tt := range []struct {
		name     string
		listen   func() (*net.UDPConn, error)
		serverIP string // Server.ServerIP; "" for none
		wantSID  string
	}{
		{"ListenUDP", func() (*net.UDPConn, error) { return ListenUDP(context.Background(), "", 0) }, "", "127.0.0.1"},
		{"server identifier not on the interface", func() (*net.UDPConn, error) { return ListenUDP(context.Background(), "", 0) }, "192.0.2.1", "192.0.2.1"},
		{"plain socket", func() (*net.UDPConn, error) {
			return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		}, "", "127.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := tt.listen()
			if err != nil {
				t.Fatal(err)
			}
			port := conn.LocalAddr().(*net.UDPAddr).Port
			spec := resource.SubnetSpec{CIDR: "127.0.0.0/8", Mode: resource.ModeProxy, UnknownMachines: resource.UnknownAllocate}
			srv := &Server{Subnets: StaticSubnets{mustSubnet(t, "lo", spec)}, PXEPort: port, Workers: 1}
			if tt.serverIP != "" {
				srv.ServerIP = netip.MustParseAddr(tt.serverIP)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx, conn) }()
			stopped := false
			stop := func() {
				if !stopped {
					stopped = true
					cancel()
					if err := <-done; err != nil {
						t.Errorf("Serve: %v", err)
					}
				}
			}
			defer stop()
			// A datagram queued before IP_PKTINFO is on carries no interface.
			dhcptest.WaitFor(t, 5*time.Second, "IP_PKTINFO on the server's socket", func() bool { return readSockopts(t, conn).pktInfo == 1 })

			client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			req := dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithArch(iana.EFI_X86_64), dhcptest.WithVendor("PXEClient:Arch:00007:UNDI:003016"), dhcptest.WithCiaddr("127.0.0.1"))
			if _, err := client.WriteToUDP(req.ToBytes(), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err != nil {
				t.Fatal(err)
			}
			// The deadline only bounds a failing test; nothing is timed.
			_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 1500)
			n, src, err := client.ReadFromUDPAddrPort(b)
			if err != nil {
				t.Fatalf("no reply: %v (counters %+v)", err, srv.Metrics.Snapshot())
			}
			ack, err := dhcpv4.FromBytes(b[:n])
			if err != nil || ack.TransactionID != req.TransactionID {
				t.Fatalf("reply %v %v", ack, err)
			}
			if sid := ack.ServerIdentifier(); sid.String() != tt.wantSID {
				t.Errorf("server identifier %s, want %s", sid, tt.wantSID)
			}
			if src != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)) {
				t.Errorf("reply from %s, want 127.0.0.1:%d", src, port)
			}
			stop() // Serve returns after its workers: the send has been counted
			if sent := srv.Metrics.Sent(dhcpv4.MessageTypeAck); sent != 1 {
				t.Errorf("%d replies counted, want 1", sent)
			}
			if e := srv.Metrics.SendErrors.Load(); e != 0 {
				t.Errorf("%d send errors counted for a reply that was sent", e)
			}
		})
	}
}

// inNetns runs f on a thread in a new network namespace, set up by the ip
// commands given (each run as `ip -n NS ARGS...`); the namespace is deleted when
// the test ends.
func inNetns(t *testing.T, setup [][]string, f func()) {
	t.Helper()
	testkit.NeedRoot(t, "network namespaces")
	testkit.NeedTool(t, "ip", "iproute2")
	ns := fmt.Sprintf("kiln-dmut-%d", os.Getpid()%100000)
	del := func() { _ = exec.Command("ip", "netns", "del", ns).Run() }
	del() // left over from a killed run
	t.Cleanup(del)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	for _, args := range setup {
		ip(append([]string{"-n", ns}, args...)...)
	}
	fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	done := make(chan error, 1)
	go func() {
		// The thread stays locked: when the goroutine ends, the runtime ends the
		// thread with it instead of reusing it in the other namespace.
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("setns: %v", err)
	}
}

// TestReadIfaceAddresses: an interface's IPv4 addresses come with their prefix
// lengths, /32 included.
func TestReadIfaceAddresses(t *testing.T) {
	t.Run("lo", func(t *testing.T) {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			t.Skipf("no lo: %v", err)
		}
		e, err := readIface(lo.Index, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if e.name != "lo" || len(e.addrs) == 0 || e.addrs[0] != netip.MustParsePrefix("127.0.0.1/8") {
			t.Errorf("lo: %q %v, want 127.0.0.1/8", e.name, e.addrs)
		}
	})
	t.Run("a /32 and a /24", func(t *testing.T) {
		var e ifaceEntry
		var err error
		inNetns(t, [][]string{
			{"link", "add", "kd0", "type", "veth", "peer", "name", "kd1"},
			{"addr", "add", "10.77.0.1/32", "dev", "kd0"},
			{"addr", "add", "10.78.0.1/24", "dev", "kd0"},
		}, func() {
			var ifi *net.Interface
			if ifi, err = net.InterfaceByName("kd0"); err == nil {
				e, err = readIface(ifi.Index, time.Now())
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []netip.Prefix{netip.MustParsePrefix("10.77.0.1/32"), netip.MustParsePrefix("10.78.0.1/24")}
		if e.name != "kd0" || fmt.Sprint(e.addrs) != fmt.Sprint(want) {
			t.Errorf("kd0: %q %v, want %v", e.name, e.addrs, want)
		}
	})
}
