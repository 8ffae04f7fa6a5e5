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
	"os"
	"time"
)

var (
	errTimeout  = errors.New("timed out waiting for an acknowledgement")
	errShutdown = errors.New("server shutting down")
)

// peerError is an ERROR packet received from the client: it ends the transfer.
type peerError struct {
	code ErrorCode
	msg  string
}

func (e *peerError) Error() string {
	return fmt.Sprintf("client sent error %d: %q", e.code, e.msg)
}

// transfer sends one file to one client from its own socket. It is the sending
// half of RFC 1350 lock-step, generalised to RFC 7440 windows: a window of
// blocks is sent, then the sender waits for an ACK. Window 1 is plain RFC 1350.
//
// Blocks are numbered with 64-bit counters internally and truncated to 16 bits
// on the wire, so block numbers roll over from 65535 to 0 (the convention of
// tftp-hpa, iPXE and most PXE ROMs) and files larger than 65535 blocks (32 MiB
// at 512 bytes) transfer correctly.
type transfer struct {
	conn       *net.UDPConn
	remote     netip.AddrPort
	src        io.Reader
	blksize    int
	window     int
	timeout    time.Duration // first retransmission timeout
	maxTimeout time.Duration // backoff cap
	// firstACK caps the backoff, and the negotiated timeout is not used, until
	// the client has acknowledged once (acknowledged): only then is it known
	// that the request did not come from a spoofed address.
	firstACK     time.Duration
	serverTO     time.Duration // the server's own first timeout, used until then
	acknowledged bool
	retries      int
	oack         []byte // nil: no options were acknowledged
	m            *Metrics
	log          *slog.Logger

	ring    [][]byte // DATA packets of the current window, index block%window
	read    uint64   // highest block read from src
	last    uint64   // the final (short) block, 0 until it has been read
	acked   uint64   // highest block acknowledged
	sentMax uint64   // highest block sent so far, to tell retransmissions apart
	bytes   uint64   // payload bytes sent, retransmissions included
	rbuf    []byte
}

func (t *transfer) run(ctx context.Context) error {
	// Cancelling ctx must unblock a read in progress: move the deadline to now.
	stop := context.AfterFunc(ctx, func() { t.conn.SetReadDeadline(time.Now()) })
	defer stop()
	t.ring = make([][]byte, t.window)
	t.rbuf = make([]byte, 1024)

	err := t.send(ctx)
	switch {
	case err == nil:
	case errors.Is(err, errShutdown):
		t.sendError(ErrCodeNotDefined, "server shutting down")
	case errors.Is(err, errTimeout):
		t.sendError(ErrCodeNotDefined, "timeout")
	case errors.As(err, new(*peerError)):
		// RFC 1350 section 7: an ERROR is not acknowledged or answered.
	default:
		t.sendError(ErrCodeNotDefined, "transfer failed")
	}
	return err
}

func (t *transfer) send(ctx context.Context) error {
	if t.oack != nil {
		// RFC 2347: after an OACK the server waits for ACK 0 before DATA 1.
		// The OACK is retransmitted like a data block.
		_, err := t.await(ctx, func(attempt int) error {
			if attempt > 0 {
				t.m.Retransmits.Add(1)
			}
			t.write(t.oack)
			return nil
		}, func(k uint16) (uint64, bool) { return 0, k == 0 })
		if err != nil {
			return err
		}
	}
	for t.last == 0 || t.acked < t.last {
		var hi uint64
		n, err := t.await(ctx, func(int) (err error) {
			hi, err = t.sendWindow()
			return err
		}, func(k uint16) (uint64, bool) {
			// Map the 16-bit ACK onto the blocks in flight, (acked, hi]. The
			// difference is taken modulo 2^16, so it survives rollover. An ACK
			// equal to acked (difference 0) is a duplicate; one beyond hi is
			// stale (from before a rollover) or bogus.
			d := uint64(k - uint16(t.acked))
			return t.acked + d, d >= 1 && t.acked+d <= hi
		})
		if err != nil {
			return err
		}
		// An ACK for a block in the middle of the window means the client
		// lost the block after it: the next window starts right after the
		// acknowledged block (RFC 7440 section 4), resending the rest.
		t.acked = n
	}
	return nil
}

// await calls send and waits for an ACK that accept takes, resending the whole
// unacknowledged window (send again) on timeout. The timeout doubles on each
// consecutive loss up to maxTimeout, so a congested link or a slow PXE ROM is
// not flooded; after retries resends it gives up with errTimeout.
func (t *transfer) await(ctx context.Context, send func(attempt int) error, accept func(uint16) (uint64, bool)) (uint64, error) {
	timeout, maxTimeout := t.timeout, t.maxTimeout
	if !t.acknowledged {
		timeout, maxTimeout = min(cmp.Or(t.serverTO, t.timeout), t.firstACK), t.firstACK
	}
	for attempt := 0; ; attempt++ {
		if err := send(attempt); err != nil {
			return 0, err
		}
		n, err := t.waitACK(ctx, time.Now().Add(timeout), accept)
		if err == nil {
			t.acknowledged = true
		}
		if !errors.Is(err, errTimeout) {
			return n, err
		}
		if attempt >= t.retries {
			return 0, fmt.Errorf("%w (%d retransmissions)", errTimeout, attempt)
		}
		t.log.Debug("tftp retransmit", "block", t.acked+1, "attempt", attempt+1, "timeout", timeout)
		timeout = min(2*timeout, maxTimeout)
	}
}

// waitACK reads until an accepted ACK, an ERROR from the client, the deadline or
// cancellation. The deadline is fixed up front, so a stream of ignored packets
// cannot postpone a retransmission.
func (t *transfer) waitACK(ctx context.Context, deadline time.Time, accept func(uint16) (uint64, bool)) (uint64, error) {
	for {
		if err := t.conn.SetReadDeadline(deadline); err != nil {
			return 0, err
		}
		// Checked after setting the deadline: if ctx is cancelled from here on,
		// the AfterFunc in run moves the deadline to now and the read returns.
		if ctx.Err() != nil {
			return 0, errShutdown
		}
		nr, from, err := t.conn.ReadFromUDPAddrPort(t.rbuf)
		if err != nil {
			if ctx.Err() != nil {
				return 0, errShutdown
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, errTimeout
			}
			return 0, err
		}
		from = unmapAddrPort(from)
		if from != t.remote {
			// RFC 1350 section 4: a packet from another transfer ID is answered
			// with ERROR 5 and must not disturb this transfer.
			t.m.UnknownTID.Add(1)
			t.log.Debug("tftp packet from unknown transfer ID", "from", from.String())
			t.conn.WriteToUDPAddrPort(encodeError(ErrCodeUnknownTID, "unknown transfer ID"), from)
			continue
		}
		pkt := t.rbuf[:nr]
		op, _ := peekOpcode(pkt)
		switch op {
		case opACK:
			k, err := parseACK(pkt)
			if err != nil {
				t.m.MalformedPackets.Add(1)
				continue
			}
			if n, ok := accept(k); ok {
				return n, nil
			}
			// A duplicate or stale ACK is ignored: answering it with a resend
			// is the Sorcerer's Apprentice bug (RFC 1123 section 4.2.3.1),
			// where every delayed ACK doubles all further traffic. Lost
			// blocks are recovered by the retransmission timer alone.
		case opERROR:
			code, msg, err := parseError(pkt)
			if err != nil {
				t.m.MalformedPackets.Add(1)
				continue
			}
			return 0, &peerError{code, msg}
		default:
			t.m.MalformedPackets.Add(1)
		}
	}
}

// sendWindow sends blocks acked+1 .. acked+window (or up to the last block) and
// returns the highest block sent.
func (t *transfer) sendWindow() (uint64, error) {
	var hi uint64
	for n := t.acked + 1; n <= t.acked+uint64(t.window); n++ {
		pkt, err := t.block(n)
		if err != nil {
			return 0, err
		}
		if n <= t.sentMax {
			t.m.Retransmits.Add(1)
		} else {
			t.sentMax = n
		}
		t.write(pkt)
		payload := uint64(len(pkt) - hdrLen)
		t.bytes += payload
		t.m.BytesSent.Add(payload)
		hi = n
		if n == t.last {
			break
		}
	}
	return hi, nil
}

// block returns the DATA packet for block n, reading it from src if it is the
// next unread one. Windows only ever advance, so n <= read+1, and the ring slot
// of block n was last used by block n-window, which is acknowledged already.
func (t *transfer) block(n uint64) ([]byte, error) {
	i := n % uint64(len(t.ring))
	if n <= t.read {
		return t.ring[i], nil
	}
	buf := t.ring[i]
	if buf == nil {
		buf = make([]byte, hdrLen+t.blksize)
	}
	buf = buf[:cap(buf)]
	putDataHeader(buf, uint16(n)) // truncation is the rollover
	m, err := io.ReadFull(t.src, buf[hdrLen:])
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// A block shorter than blksize, possibly empty, ends the transfer
		// (RFC 1350 section 6). A file of exactly k*blksize bytes therefore
		// needs an empty block k+1.
		t.last = n
	case err != nil:
		return nil, fmt.Errorf("read block %d: %w", n, err)
	}
	t.ring[i] = buf[:hdrLen+m]
	t.read = n
	return t.ring[i], nil
}

// write sends one packet. Errors are only logged: a transient failure (ENOBUFS,
// a route flapping) is repaired by the retransmission timer, a permanent one
// ends in a timeout.
func (t *transfer) write(pkt []byte) {
	if _, err := t.conn.WriteToUDPAddrPort(pkt, t.remote); err != nil {
		t.log.Debug("tftp send failed", "err", err)
	}
}

func (t *transfer) sendError(code ErrorCode, msg string) {
	t.write(encodeError(code, msg))
}

func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
