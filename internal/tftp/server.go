package tftp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults for the zero values of Server's fields.
const (
	// DefaultMaxBlockSize keeps a DATA packet within a 1500-byte Ethernet MTU:
	// 1500 - 20 (IPv4) - 8 (UDP) - 4 (TFTP) = 1468. IPv6 clients get
	// DefaultMaxBlockSizeIPv6 (40-byte IPv6 header) unless MaxBlockSize is set.
	DefaultMaxBlockSize     = 1468
	DefaultMaxBlockSizeIPv6 = 1448
	DefaultMaxWindowSize    = 64
	DefaultRetries          = 5
	DefaultTimeout          = time.Second
	DefaultMaxTimeout       = 8 * time.Second
	// DefaultFirstACKTimeout caps the retransmission timeout until the client's
	// first ACK: a spoofed request is never acknowledged, so with the defaults
	// its slot is free again after about 1+2+2+2+2+2 = 11 s.
	DefaultFirstACKTimeout = 2 * time.Second
	// DefaultMaxTransfers and DefaultMaxTransfersPerAddress bound concurrent
	// transfers. Each holds a socket and an open file; 512 keeps TFTP well
	// under a 1024-descriptor limit shared with HTTP, and 16 per address is
	// more than a PXE ROM (or a NAT gateway of a few) ever runs at once.
	DefaultMaxTransfers           = 512
	DefaultMaxTransfersPerAddress = 16
)

// Server is a read-only TFTP server. The zero value of every field but Handler
// is usable; fields must not be changed while Serve runs.
type Server struct {
	// Handler maps requested names to content. Required.
	Handler Handler
	// Logger receives one line per request outcome, with the keys remote,
	// file, mode, blksize and windowsize. nil discards logs.
	Logger *slog.Logger
	// MaxBlockSize caps the blksize option (RFC 2348). 0 means
	// DefaultMaxBlockSize (DefaultMaxBlockSizeIPv6 for IPv6 clients), so
	// that DATA packets are never fragmented on Ethernet; values are kept
	// within 8..65464.
	MaxBlockSize int
	// MaxWindowSize caps the windowsize option (RFC 7440). 0 means
	// DefaultMaxWindowSize; values are kept within 1..65535.
	MaxWindowSize int
	// Retries is how often an unacknowledged window is resent before the
	// transfer is abandoned. 0 means DefaultRetries.
	Retries int
	// Timeout is the first retransmission timeout, unless the client
	// negotiates one with the timeout option (RFC 2349). It doubles on each
	// consecutive retransmission up to MaxTimeout. 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxTimeout caps the backoff. 0 means DefaultMaxTimeout. A negotiated
	// timeout larger than MaxTimeout is still honoured, but only once the
	// client has acknowledged something (see FirstACKTimeout).
	MaxTimeout time.Duration
	// FirstACKTimeout caps the retransmission timeout until the client's first
	// ACK; until then a timeout the client asked for (RFC 2349, up to 255 s)
	// is not used, because a spoofed request never acknowledges and would hold
	// its socket for 255 s per retry. 0 means DefaultFirstACKTimeout.
	FirstACKTimeout time.Duration
	// MaxTransfers and MaxTransfersPerAddress cap the transfers running at
	// once, in total and per client IP address; a request beyond either is
	// answered with ERROR 0 "server busy" from the listening socket (no new
	// descriptor) and counted. 0 means DefaultMaxTransfers and
	// DefaultMaxTransfersPerAddress.
	MaxTransfers           int
	MaxTransfersPerAddress int
	// Metrics, if not nil, receives the server's counters.
	Metrics *Metrics
	// OnTransfer, if not nil, is called when a transfer that got past the
	// Handler ends (Kiln puts it on the machine's boot timeline).
	OnTransfer func(TransferResult)
}

// TransferResult describes one finished transfer.
type TransferResult struct {
	Request  Request
	Bytes    int64
	Duration time.Duration
	// Err is nil for a completed transfer; Aborted is set when the client
	// ended it with an ERROR packet (a tsize probe, usually).
	Err     error
	Aborted bool
}

// settings are Server's fields with defaults applied.
type settings struct {
	handler    Handler
	log        *slog.Logger
	maxBlk     int
	maxBlk6    int // for IPv6 clients
	maxWin     int
	retries    int
	timeout    time.Duration
	maxTimeout time.Duration
	firstACK   time.Duration
	maxTotal   int
	maxPerAddr int
	m          *Metrics
	onTransfer func(TransferResult)
}

func (s *Server) settings() settings {
	c := settings{
		handler:    s.Handler,
		log:        s.Logger,
		maxBlk:     s.MaxBlockSize,
		maxWin:     s.MaxWindowSize,
		retries:    s.Retries,
		timeout:    s.Timeout,
		maxTimeout: s.MaxTimeout,
		firstACK:   cmp.Or(s.FirstACKTimeout, DefaultFirstACKTimeout),
		maxTotal:   cmp.Or(s.MaxTransfers, DefaultMaxTransfers),
		maxPerAddr: cmp.Or(s.MaxTransfersPerAddress, DefaultMaxTransfersPerAddress),
		m:          s.Metrics,
		onTransfer: s.OnTransfer,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.maxBlk <= 0 {
		c.maxBlk, c.maxBlk6 = DefaultMaxBlockSize, DefaultMaxBlockSizeIPv6
	} else {
		c.maxBlk = min(max(c.maxBlk, minBlockSize), maxBlockSize)
		c.maxBlk6 = c.maxBlk
	}
	if c.maxWin <= 0 {
		c.maxWin = DefaultMaxWindowSize
	}
	c.maxWin = min(c.maxWin, maxWindowSize)
	if c.retries <= 0 {
		c.retries = DefaultRetries
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.maxTimeout <= 0 {
		c.maxTimeout = DefaultMaxTimeout
	}
	c.maxTimeout = max(c.maxTimeout, c.timeout)
	if c.m == nil {
		c.m = new(Metrics)
	}
	return c
}

// ListenAndServe listens on the UDP address addr (":69" for the standard port)
// and serves until ctx is cancelled; see Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	defer conn.Close()
	return s.Serve(ctx, conn)
}

// Serve reads requests from conn and runs each transfer on its own goroutine
// and ephemeral socket until ctx is cancelled. Cancellation stops in-flight
// transfers (their clients get an ERROR packet) and Serve returns nil once every
// transfer goroutine has exited. Serve does not close conn, but leaves its read
// deadline in the past.
//
// When conn is a *net.UDPConn bound to a wildcard address, Serve asks the kernel
// for each request's destination address (IP_PKTINFO, on Linux) so that the
// reply comes from the address the client sent to.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	if s.Handler == nil {
		return errors.New("tftp: Server.Handler is nil")
	}
	c := s.settings()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()

	src := newPacketSource(conn)
	var active activeSet
	buf := make([]byte, 65536)
	for {
		n, from, local, err := src.read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tftp: read: %w", err)
		}
		if !from.IsValid() {
			c.m.MalformedPackets.Add(1)
			continue
		}
		from = unmapAddrPort(from)
		op, _ := peekOpcode(buf[:n])
		if op != opRRQ && op != opWRQ {
			// DATA, ACK, ERROR or garbage at the request port belong to no
			// transfer; answering them could be abused for reflection.
			c.m.MalformedPackets.Add(1)
			c.log.Debug("tftp unexpected packet at request port", "remote", from.String(), "opcode", op)
			continue
		}
		req, err := parseRequest(buf[:n])
		if err != nil {
			c.m.MalformedPackets.Add(1)
			c.log.Debug("tftp malformed request", "remote", from.String(), "err", err)
			continue
		}
		// A client that does not hear back quickly resends its RRQ. Starting a
		// second transfer to the same port would make the client answer one
		// of them with ERROR 5, or confuse simple PXE ROMs; the running
		// transfer already retransmits.
		switch active.add(from, c.maxTotal, c.maxPerAddr) {
		case admitDuplicate:
			c.m.DuplicateRequests.Add(1)
			c.log.Debug("tftp duplicate request ignored", "remote", from.String(), "file", req.filename)
			continue
		case admitFull, admitAddressFull:
			// Refused from the listening socket: opening a transfer socket
			// for the answer would spend the descriptor the cap protects.
			c.m.Requests.Add(1)
			c.m.Refused.Add(1)
			c.m.RefusedBusy.Add(1)
			reason := "total transfers cap"
			if active.lastRefusal == admitAddressFull {
				c.m.RefusedBusyAddress.Add(1)
				reason = "per-address transfers cap"
			}
			c.log.Debug("tftp request refused", "remote", from.String(), "file", req.filename, "reason", reason)
			conn.WriteTo(encodeError(ErrCodeNotDefined, "server busy"), net.UDPAddrFromAddrPort(from))
			continue
		}
		c.m.Requests.Add(1)
		wg.Go(func() {
			defer active.remove(from)
			c.serveRequest(ctx, conn, req, from, local)
		})
	}
}

func (c *settings) serveRequest(ctx context.Context, listener net.PacketConn, req request, remote netip.AddrPort, local netip.Addr) {
	log := c.log.With("remote", remote.String(), "file", req.filename, "mode", req.mode)
	conn, err := listenTransfer(remote, local)
	if err != nil {
		c.m.Refused.Add(1)
		log.Error("tftp cannot open transfer socket", "err", err)
		listener.WriteTo(encodeError(ErrCodeNotDefined, "internal error"), net.UDPAddrFromAddrPort(remote))
		return
	}
	defer conn.Close()
	refuse := func(code ErrorCode, msg string, level slog.Level, reason string, err error) {
		c.m.Refused.Add(1)
		conn.WriteToUDPAddrPort(encodeError(code, msg), remote)
		attrs := []any{"reason", reason, "code", int(code)}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		log.Log(ctx, level, "tftp request refused", attrs...)
	}

	if req.op == opWRQ {
		refuse(ErrCodeAccessViolation, "server is read-only", slog.LevelWarn, "write request", nil)
		return
	}
	if req.mode != "octet" && req.mode != "netascii" {
		// "mail" (obsolete, RFC 1350) and anything else.
		refuse(ErrCodeIllegalOperation, "unsupported mode", slog.LevelWarn, "unsupported mode", nil)
		return
	}
	opts := make(map[string]string, len(req.options))
	for _, o := range req.options {
		opts[o.name] = o.value
	}
	treq := Request{Filename: req.filename, Mode: req.mode, RemoteAddr: remote, Options: opts}
	rc, size, err := c.handler.ServeTFTP(ctx, treq)
	if err == nil && rc == nil {
		err = errors.New("handler returned no content and no error")
	}
	if err != nil {
		code, msg := toWireError(err)
		level := slog.LevelWarn
		if code == ErrCodeFileNotFound {
			// PXE loaders probe many names (pxelinux.cfg/01-<mac>, ...):
			// a missing file is routine.
			level = slog.LevelInfo
		}
		refuse(code, msg, level, msg, err)
		return
	}
	defer rc.Close()

	maxBlk := c.maxBlk
	if !remote.Addr().Is4() {
		maxBlk = c.maxBlk6
	}
	neg := negotiate(req.options, req.mode, size, maxBlk, c.maxWin)
	var r io.Reader = rc
	if req.mode == "netascii" {
		r = newNetasciiReader(rc)
	}
	t := &transfer{
		conn:       conn,
		remote:     remote,
		src:        r,
		blksize:    neg.blksize,
		window:     neg.window,
		timeout:    c.timeout,
		maxTimeout: c.maxTimeout,
		firstACK:   min(c.firstACK, c.maxTimeout),
		serverTO:   c.timeout,
		retries:    c.retries,
		m:          c.m,
		log:        log,
	}
	if neg.timeout > 0 {
		t.timeout = neg.timeout
		t.maxTimeout = max(c.maxTimeout, neg.timeout)
	}
	if neg.oack != nil {
		t.oack = encodeOACK(neg.oack)
	}
	log = log.With("blksize", neg.blksize, "windowsize", neg.window)
	t.log = log
	c.m.TransfersStarted.Add(1)
	log.Debug("tftp transfer started", "size", size, "tsize", neg.tsize, "local", conn.LocalAddr().String())

	start := time.Now()
	err = t.run(ctx)
	attrs := []any{"bytes", t.bytes, "duration", time.Since(start).Round(time.Millisecond)}
	var pe *peerError
	if c.onTransfer != nil {
		c.onTransfer(TransferResult{Request: treq, Bytes: int64(t.bytes), Duration: time.Since(start), Err: err, Aborted: errors.As(err, &pe)})
	}
	switch {
	case err == nil:
		c.m.TransfersCompleted.Add(1)
		log.Info("tftp transfer completed", attrs...)
	case errors.As(err, &pe):
		// Not a server failure: PXE ROMs routinely request a file with only
		// tsize, read the OACK and abort (often with code 0 or 8) to learn the
		// size before the real transfer.
		c.m.TransfersAborted.Add(1)
		log.Info("tftp transfer aborted by client", append(attrs, "code", int(pe.code), "message", pe.msg)...)
	default:
		c.m.TransfersFailed.Add(1)
		level := slog.LevelWarn
		if errors.Is(err, errShutdown) {
			level = slog.LevelInfo
		}
		log.Log(context.Background(), level, "tftp transfer failed", append(attrs, "err", err)...)
	}
}

// listenTransfer opens the socket of a new transfer ID (RFC 1350 section 4): a
// random port on the local address the request was sent to, so that clients
// that check the reply's source address accept it.
func listenTransfer(remote netip.AddrPort, local netip.Addr) (*net.UDPConn, error) {
	network := "udp4"
	if !remote.Addr().Is4() {
		network = "udp6"
	}
	var laddr *net.UDPAddr
	if local.IsValid() && !local.IsUnspecified() && !local.IsMulticast() && local.Is4() == remote.Addr().Is4() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	return net.ListenUDP(network, laddr)
}

// activeSet is the set of client addresses with a transfer in progress, with
// counts per IP address for the caps. Only Serve's loop adds, so lastRefusal
// needs no lock of its own.
type activeSet struct {
	mu          sync.Mutex
	m           map[netip.AddrPort]struct{}
	perAddr     map[netip.Addr]int
	lastRefusal admission
}

// admission is what activeSet.add decided about a request.
type admission int

const (
	admitted admission = iota
	admitDuplicate
	admitFull        // MaxTransfers reached
	admitAddressFull // MaxTransfersPerAddress reached for the client's address
)

func (a *activeSet) add(k netip.AddrPort, maxTotal, maxPerAddr int) admission {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.m[k]; ok {
		return admitDuplicate
	}
	switch {
	case a.perAddr[k.Addr()] >= maxPerAddr:
		a.lastRefusal = admitAddressFull
		return admitAddressFull
	case len(a.m) >= maxTotal:
		a.lastRefusal = admitFull
		return admitFull
	}
	if a.m == nil {
		a.m = make(map[netip.AddrPort]struct{})
		a.perAddr = make(map[netip.Addr]int)
	}
	a.m[k] = struct{}{}
	a.perAddr[k.Addr()]++
	return admitted
}

func (a *activeSet) remove(k netip.AddrPort) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, k)
	if a.perAddr[k.Addr()]--; a.perAddr[k.Addr()] <= 0 {
		delete(a.perAddr, k.Addr())
	}
}

// packetSource reads datagrams from the listening socket and reports the local
// address each was sent to, when known.
type packetSource struct {
	conn    net.PacketConn
	udp     *net.UDPConn // set when pktinfo is enabled on it
	oob     []byte
	boundIP netip.Addr // the listener's own address if it is not a wildcard
}

func newPacketSource(conn net.PacketConn) *packetSource {
	p := &packetSource{conn: conn}
	if ua, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ua.IP); ok {
			p.boundIP = ip.Unmap().WithZone(ua.Zone)
		}
	}
	if udp, ok := conn.(*net.UDPConn); ok && (!p.boundIP.IsValid() || p.boundIP.IsUnspecified()) && enableDstAddr(udp) {
		p.udp = udp
		p.oob = make([]byte, 256)
	}
	return p
}

func (p *packetSource) read(b []byte) (int, netip.AddrPort, netip.Addr, error) {
	if p.udp != nil {
		n, oobn, _, from, err := p.udp.ReadMsgUDPAddrPort(b, p.oob)
		if err != nil {
			return 0, netip.AddrPort{}, netip.Addr{}, err
		}
		return n, from, parseDstAddr(p.oob[:oobn]), nil
	}
	n, addr, err := p.conn.ReadFrom(b)
	if err != nil {
		return 0, netip.AddrPort{}, netip.Addr{}, err
	}
	var from netip.AddrPort
	if ua, ok := addr.(*net.UDPAddr); ok {
		from = ua.AddrPort()
	}
	return n, from, p.boundIP, nil
}
