package tftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// getOpts configures the in-process test client.
type getOpts struct {
	mode    string   // "octet" unless set
	options []option // sent in the RRQ
	// w receives the file; nil collects it into getResult.data.
	w io.Writer
	// timeout is the client's retransmission timeout (default 1s).
	timeout time.Duration
	// ackCopies sends every ACK this many times (duplicate ACK tests).
	ackCopies int
	// dropACK, if set, is asked before each ACK is sent (block is the absolute
	// block number, nth counts ACKs of that block); true drops it.
	dropACK func(block uint64, nth int) bool
	// dropData, if set, is asked for each DATA packet that would be accepted
	// in order; true discards it as if lost.
	dropData func(block uint64, nth int) bool
	// onBlock runs after each block is accepted, with the server's TID.
	onBlock func(block uint64, server netip.AddrPort)
	// abortAfterOACK sends ERROR 8 instead of ACK 0, like a PXE tsize probe.
	abortAfterOACK bool
}

type getResult struct {
	data        []byte
	oack        map[string]string
	server      netip.AddrPort // the transfer's TID
	blocks      uint64         // blocks accepted
	dataPackets int            // DATA packets received
	dupData     int            // DATA packets for blocks already accepted
}

// remoteError is an ERROR packet received by the test client.
type remoteError struct {
	code ErrorCode
	msg  string
}

func (e *remoteError) Error() string { return fmt.Sprintf("server error %d: %s", e.code, e.msg) }

// tftpGet fetches file from the server at addr, RFC 1350/2347/7440 receiver
// side. Every wait is bounded by ctx, which must have a deadline.
func tftpGet(ctx context.Context, addr netip.AddrPort, file string, o getOpts) (*getResult, error) {
	if o.mode == "" {
		o.mode = "octet"
	}
	if o.timeout == 0 {
		o.timeout = time.Second
	}
	if o.ackCopies == 0 {
		o.ackCopies = 1
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr.Addr(), 0)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()

	res := &getResult{}
	var buf bytes.Buffer
	w := o.w
	if w == nil {
		w = &buf
	}
	rrq := encodeRequest(opRRQ, file, o.mode, o.options)
	if _, err := conn.WriteToUDPAddrPort(rrq, addr); err != nil {
		return nil, err
	}
	blksize, window := defaultBlockSize, 1
	acks := map[uint64]int{}
	drops := map[uint64]int{}
	sendACK := func(n uint64) {
		acks[n]++
		if o.dropACK != nil && o.dropACK(n, acks[n]) {
			return
		}
		for range o.ackCopies {
			conn.WriteToUDPAddrPort(encodeACK(uint16(n)), res.server)
		}
	}
	inWindow := 0
	retries := 0
	rbuf := make([]byte, 70000)
	for {
		conn.SetReadDeadline(time.Now().Add(o.timeout))
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		n, from, err := conn.ReadFromUDPAddrPort(rbuf)
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
				return res, err
			}
			if retries++; retries > 20 {
				return res, errors.New("client: too many timeouts")
			}
			if !res.server.IsValid() {
				conn.WriteToUDPAddrPort(rrq, addr)
			} else {
				sendACK(res.blocks)
			}
			continue
		}
		retries = 0
		if !res.server.IsValid() {
			res.server = from
		} else if from != res.server {
			conn.WriteToUDPAddrPort(encodeError(ErrCodeUnknownTID, "unknown TID"), from)
			continue
		}
		pkt := rbuf[:n]
		op, _ := peekOpcode(pkt)
		switch op {
		case opERROR:
			code, msg, err := parseError(pkt)
			if err != nil {
				return res, err
			}
			return res, &remoteError{code, msg}
		case opOACK:
			if res.blocks > 0 {
				continue
			}
			opts, err := parseOACK(pkt)
			if err != nil {
				return res, err
			}
			res.oack = map[string]string{}
			for _, op := range opts {
				res.oack[op.name] = op.value
				v, _ := strconv.Atoi(op.value)
				switch op.name {
				case "blksize":
					blksize = v
				case "windowsize":
					window = v
				}
			}
			if o.abortAfterOACK {
				conn.WriteToUDPAddrPort(encodeError(ErrCodeOptionRefused, "just probing"), res.server)
				return res, nil
			}
			sendACK(0)
		case opDATA:
			block, payload, err := parseData(pkt)
			if err != nil {
				return res, err
			}
			res.dataPackets++
			next := res.blocks + 1
			if block != uint16(next) {
				// A duplicate (the server retransmitted) or a gap (a block
				// of the window was lost): acknowledge what we have, which
				// RFC 7440 uses to restart the window after it.
				if uint16(res.blocks-uint64(block)) < 0x8000 {
					res.dupData++
				}
				sendACK(res.blocks)
				inWindow = 0
				continue
			}
			if len(payload) > blksize {
				return res, fmt.Errorf("block %d has %d bytes, blksize %d", next, len(payload), blksize)
			}
			drops[next]++
			if o.dropData != nil && o.dropData(next, drops[next]) {
				continue
			}
			if _, err := w.Write(payload); err != nil {
				return res, err
			}
			res.blocks = next
			if o.onBlock != nil {
				o.onBlock(next, res.server)
			}
			inWindow++
			if len(payload) < blksize {
				sendACK(next)
				res.data = buf.Bytes()
				return res, nil
			}
			if inWindow >= window {
				sendACK(next)
				inWindow = 0
			}
		default:
			return res, fmt.Errorf("client: unexpected %v", op)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// startServer runs s on a fresh 127.0.0.1 socket until the test ends, and
// checks that Serve returns cleanly.
func startServer(t testing.TB, s *Server) netip.AddrPort {
	t.Helper()
	return startServerOn(t, s, "127.0.0.1:0")
}

func startServerOn(t testing.TB, s *Server, addr string) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if s.Logger == nil {
		s.Logger = testLogger(t)
	}
	// Cleanups run last in, first out: Serve has returned when conn is closed.
	t.Cleanup(func() { conn.Close() })
	testkit.Background(t, "Serve", func(ctx context.Context) error { return s.Serve(ctx, conn) })
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
