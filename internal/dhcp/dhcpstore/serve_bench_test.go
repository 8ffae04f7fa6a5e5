//go:build linux

package dhcpstore

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
)

// BenchmarkServeRelayedSQLite is the whole server as perfdhcp sees it, over
// loopback: Serve's socket loop and workers, the handlers, the embedded store. A
// relay agent on 127.0.0.2:67 (root: port 67) keeps up to 128 DORA exchanges in
// flight, each for a new client, and sends the REQUEST when the OFFER arrives.
// Profile it with -cpuprofile; -cpu 1 gives the server one core like the
// benchmark scripts do (here the relay shares it).
func BenchmarkServeRelayedSQLite(b *testing.B) {
	testkit.NeedRoot(b, "the relay agent, which listens on port 67")
	st := testkit.OpenSQLite(b, b.TempDir())
	sn := mustSubnet(b, "bench", resource.SubnetSpec{CIDR: "127.0.0.0/8", Pools: []resource.Pool{{Start: "127.1.0.0", End: "127.16.255.250"}},
		LeaseTime: "1h", UnknownMachines: resource.UnknownAllocate})
	srv := &dhcp.Server{Subnets: dhcp.StaticSubnets{sn}, Machines: &Machines{Store: st}, Leases: NewLeases(st, 0), PXEPort: -1}
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := dhcp.ListenUDP(ctx, "", 0)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	defer func() {
		cancel()
		<-done
	}()
	// The relay is a plain socket: it needs none of the server's options
	// (broadcast, IP_PKTINFO), only a receive buffer as large as the server's.
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp4", "127.0.0.2:67")
	if err != nil {
		b.Fatal(err)
	}
	relay := pc.(*net.UDPConn)
	forceReadBuffer(relay, relayBuffer)
	defer relay.Close()
	dst := conn.LocalAddr().(*net.UDPAddr)
	dst.IP = net.IPv4(127, 0, 0, 1)
	giaddr := net.IPv4(127, 0, 0, 2)

	const window = 128
	slots := make(chan struct{}, window)
	var acked atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the relay's receiving side: OFFER -> REQUEST, ACK -> done
		defer wg.Done()
		buf := make([]byte, 1500)
		for acked.Load() < int64(b.N) {
			_ = relay.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := relay.ReadFromUDP(buf)
			if err != nil {
				b.Errorf("relay: %v (acked %d of %d, counters %+v)", err, acked.Load(), b.N, srv.Metrics.Snapshot())
				return
			}
			m, err := dhcpv4.FromBytes(buf[:n])
			if err != nil {
				continue
			}
			switch m.MessageType() {
			case dhcpv4.MessageTypeOffer:
				r, _ := dhcpv4.New(dhcpv4.WithHwAddr(m.ClientHWAddr), dhcpv4.WithTransactionID(m.TransactionID),
					dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithGatewayIP(giaddr),
					dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(m.YourIPAddr)),
					dhcpv4.WithOption(dhcpv4.OptServerIdentifier(m.ServerIdentifier())))
				_, _ = relay.WriteToUDP(r.ToBytes(), dst)
			case dhcpv4.MessageTypeAck:
				acked.Add(1)
				<-slots
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	hw := make(net.HardwareAddr, 6)
	hw[0] = 0x02
	for i := range b.N {
		slots <- struct{}{}
		binary.BigEndian.PutUint32(hw[2:], uint32(i))
		d, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
			dhcpv4.WithGatewayIP(giaddr))
		if _, err := relay.WriteToUDP(d.ToBytes(), dst); err != nil {
			b.Fatal(err)
		}
		if b.Failed() {
			break
		}
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(acked.Load())/b.Elapsed().Seconds(), "leases/s")
	if sl := srv.Leases.(*Leases); sl.batches.Load() > 0 {
		b.ReportMetric(float64(sl.batched.Load())/float64(sl.batches.Load()), "ops/tx")
	}
}

// relayBuffer is the relay's receive buffer: the size dhcp.Server.Serve asks for
// its own socket (serve.go's socketBuffer), so that neither side drops a burst.
const relayBuffer = 4 << 20

// forceReadBuffer asks for an n-byte receive buffer the way dhcp's setReadBuffer
// does: SO_RCVBUFFORCE (root, beyond net.core.rmem_max), else SO_RCVBUF. Best
// effort.
func forceReadBuffer(conn *net.UDPConn, n int) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	})
}
