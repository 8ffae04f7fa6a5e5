package dhcp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"
)

// queueLen bounds the datagrams waiting for a worker; beyond it they are dropped
// (DropOverload) rather than piling up behind a slow store.
const queueLen = 4096

// DefaultWorkers is how many datagrams Serve handles at once when Server.Workers
// is 0. A worker mostly waits for the lease store's group commit, so there are
// many: the more requests wait together, the more one transaction stores.
const DefaultWorkers = 256

// socketBuffer is the receive buffer Serve asks for, so that a burst (a rack
// powering on, a relay flushing its queue) waits in the kernel instead of being
// dropped while the workers are busy.
const socketBuffer = 4 << 20

type datagram struct {
	b       []byte
	src     netip.AddrPort
	ifindex int
}

// Serve answers the datagrams of conn, a UDP socket bound to port 67 or to the
// PXE port, until ctx ends; it then waits for the requests in progress, closes
// conn and returns nil. The receiving interface of each datagram comes from
// IP_PKTINFO, so conn may be bound to one interface (see ListenUDP) or to all.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) error {
	defer conn.Close()
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return fmt.Errorf("dhcp: serve: %v is not a UDP address", conn.LocalAddr())
	}
	port := uint16(la.Port)
	if err := enablePktInfo(conn); err != nil {
		return fmt.Errorf("dhcp: serve %s: %w", la, err)
	}
	setReadBuffer(conn, socketBuffer)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	jobs := make(chan datagram, queueLen)
	var wg sync.WaitGroup
	for range cmp.Or(s.Workers, DefaultWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]byte, 0, 1500) // this worker's reply buffer
			for d := range jobs {
				out = s.serveOne(ctx, conn, port, d, out)
			}
		}()
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()

	oob := make([]byte, 128)
	// One byte more than accepted, so that a giant datagram is seen as such
	// instead of silently truncated. The buffer is reused; each datagram is copied
	// out at its size (a few hundred bytes, not a buffer's worth of garbage each).
	buf := make([]byte, MaxPacketSize+1)
	for {
		n, oobn, _, src, err := conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dhcp: read from %s: %w", la, err)
		}
		d := datagram{b: append([]byte(nil), buf[:n]...), src: src, ifindex: parsePktInfo(oob[:oobn])}
		select {
		case jobs <- d:
			// Let the worker answer now rather than after this loop has drained the
			// socket: on a busy core the replies then leave as the requests come,
			// not in bursts that overflow the receive buffers of relays and clients.
			runtime.Gosched()
		default:
			s.Metrics.countReceived(0)
			s.Metrics.countDrop(DropOverload)
		}
	}
}

// serveOne answers one datagram; out is the worker's buffer for the reply, and
// is returned for the next one.
func (s *Server) serveOne(ctx context.Context, conn *net.UDPConn, port uint16, d datagram, out []byte) []byte {
	defer func() {
		// HandlePacket does not panic on any input (the fuzz targets check that);
		// this keeps one bug in a seam implementation from taking the server down.
		if v := recover(); v != nil {
			s.log().Error("dhcp: panic while handling a datagram", "src", d.src, "panic", fmt.Sprint(v))
		}
	}()
	in := Inbound{Src: d.src, LocalPort: port, IfaceIndex: d.ifindex}
	if d.ifindex > 0 {
		in.Iface, in.IfaceAddrs = s.ifaces.lookup(d.ifindex, time.Now())
	}
	rep := s.HandlePacket(ctx, d.b, in)
	if rep == nil {
		return out
	}
	local := false
	for _, p := range in.IfaceAddrs {
		if p.Addr() == rep.From {
			local = true
		}
	}
	from := netip.Addr{}
	if local {
		from = rep.From
	}
	// The interface index makes a broadcast leave through the interface the
	// request came in on, also on a socket bound to all interfaces.
	out = appendPacket(out[:0], rep.Msg)
	if _, _, err := conn.WriteMsgUDPAddrPort(out, pktInfo(d.ifindex, from), rep.Dst); err != nil {
		s.Metrics.SendErrors.Add(1)
		s.log().Warn("dhcp: send reply", "mac", rep.Msg.ClientHWAddr.String(), "dst", rep.Dst.String(), "err", err)
	}
	releaseReply(rep.Msg)
	return out
}

// ListenAndServe serves DHCP on port 67, and the PXE boot server on PXEPort, of
// each named interface (every interface when names is empty) until ctx ends or a
// socket fails.
func (s *Server) ListenAndServe(ctx context.Context, names []string) error {
	ports := []int{ServerPort}
	if p := s.pxePort(); p > 0 {
		ports = append(ports, p)
	}
	if len(names) == 0 {
		names = []string{""}
	}
	var conns []*net.UDPConn
	for _, name := range names {
		for _, port := range ports {
			c, err := ListenUDP(ctx, name, port)
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return err
			}
			conns = append(conns, c)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(conns))
	for _, c := range conns {
		go func() {
			err := s.Serve(ctx, c)
			cancel() // one socket failing stops the others
			errs <- err
		}()
	}
	s.log().Info("dhcp: serving", "interfaces", names, "ports", ports)
	var first error
	for range conns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// ListenUDP opens a UDP socket on 0.0.0.0:port that receives broadcasts, bound to
// interface iface ("" for all; SO_BINDTODEVICE), with SO_REUSEADDR so that one
// socket per interface can share the port, and IP_PKTINFO on from the start (a
// datagram queued before it is set carries no interface).
func ListenUDP(ctx context.Context, iface string, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: socketControl(iface)}
	pc, err := lc.ListenPacket(ctx, "udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		where := "all interfaces"
		if iface != "" {
			where = "interface " + iface
		}
		return nil, fmt.Errorf("dhcp: listen on UDP port %d of %s: %w", port, where, err)
	}
	return pc.(*net.UDPConn), nil
}

// ---- interface lookups ------------------------------------------------------------

// ifaceCacheTTL is how long an interface's name and addresses are reused.
const ifaceCacheTTL = 5 * time.Second

type ifaceEntry struct {
	name  string
	addrs []netip.Prefix
	at    time.Time
}

// ifaceCache maps interface indexes to names and IPv4 addresses.
type ifaceCache struct {
	mu sync.Mutex
	m  map[int]ifaceEntry
	// readFn stands in for readIface in tests (a netlink dump that fails); nil:
	// readIface.
	readFn func(index int, now time.Time) (ifaceEntry, error)
}

func (c *ifaceCache) lookup(index int, now time.Time) (string, []netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[index]; ok && now.Sub(e.at) < ifaceCacheTTL {
		return e.name, e.addrs
	}
	e, err := c.read(index, now)
	for try := 1; err != nil && try < 3; try++ {
		// A netlink dump fails when links change meanwhile (namespaces and veth
		// pairs coming and going on a busy host): ask again.
		time.Sleep(time.Duration(try) * 5 * time.Millisecond)
		e, err = c.read(index, now)
	}
	if err != nil {
		if old, ok := c.m[index]; ok {
			return old.name, old.addrs // stale beats nothing
		}
		return "", nil
	}
	if c.m == nil {
		c.m = map[int]ifaceEntry{}
	}
	c.m[index] = e
	return e.name, e.addrs
}

func (c *ifaceCache) read(index int, now time.Time) (ifaceEntry, error) {
	if c.readFn != nil {
		return c.readFn(index, now)
	}
	return readIface(index, now)
}

func readIface(index int, now time.Time) (ifaceEntry, error) {
	ifi, err := net.InterfaceByIndex(index)
	if err != nil {
		return ifaceEntry{}, err
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return ifaceEntry{}, err
	}
	e := ifaceEntry{name: ifi.Name, at: now}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP.To4()); ok {
				ones, _ := ipn.Mask.Size()
				if ones > 32 {
					ones -= 96
				}
				e.addrs = append(e.addrs, netip.PrefixFrom(ip, ones))
			}
		}
	}
	return e, nil
}
