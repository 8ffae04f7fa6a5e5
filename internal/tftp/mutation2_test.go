package tftp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Tests for mutants the complete gremlins run of 2026-12-07 found alive
// (TESTING.md, internal/tftp).

// TestSettingsDefaults: a Server's zero fields take the documented defaults, and
// set fields are kept (the backoff cap, the retries, the logger).
func TestSettingsDefaults(t *testing.T) {
	zero := (&Server{}).settings()
	if zero.retries != DefaultRetries || zero.timeout != DefaultTimeout || zero.maxTimeout != DefaultMaxTimeout ||
		zero.maxBlk != DefaultMaxBlockSize || zero.maxBlk6 != DefaultMaxBlockSizeIPv6 || zero.maxWin != DefaultMaxWindowSize || zero.log == nil {
		t.Errorf("zero Server's settings: %+v", zero)
	}
	// A MaxTimeout below Timeout is raised to it; an unset one is the default,
	// not the timeout (no backoff at all).
	if s := (&Server{Timeout: 50 * time.Millisecond}).settings(); s.maxTimeout != DefaultMaxTimeout {
		t.Errorf("Timeout 50ms, no MaxTimeout: cap %v, want %v", s.maxTimeout, DefaultMaxTimeout)
	}
	l := slog.New(slog.DiscardHandler)
	set := (&Server{Timeout: 20 * time.Millisecond, MaxTimeout: 80 * time.Millisecond, Retries: 2, Logger: l, MaxBlockSize: 1024}).settings()
	if set.maxTimeout != 80*time.Millisecond || set.retries != 2 || set.log != l || set.maxBlk != 1024 || set.maxBlk6 != 1024 {
		t.Errorf("explicit settings not kept: %+v", set)
	}
	if s := (&Server{Timeout: time.Second, MaxTimeout: 10 * time.Millisecond}).settings(); s.maxTimeout != time.Second {
		t.Errorf("MaxTimeout below Timeout: cap %v, want the timeout", s.maxTimeout)
	}
}

// TestParseRequestPaddingAndEmptyFields: NUL padding before an option does not
// lose the options after it (PXE ROMs pad), and an empty filename is refused as
// empty, not as unterminated.
func TestParseRequestPaddingAndEmptyFields(t *testing.T) {
	b := append(encodeRequest(opRRQ, "pxelinux.0", "octet", nil), 0, 0)
	b = append(b, "blksize\x001468\x00"...)
	req, err := parseRequest(b)
	if err != nil || len(req.options) != 1 || req.options[0] != (option{"blksize", "1468"}) {
		t.Fatalf("padded request: %+v, %v; want blksize 1468", req, err)
	}
	for _, c := range []struct {
		pkt  []byte
		want error
	}{
		{encodeRequest(opRRQ, "", "octet", nil), errEmptyField},
		{encodeRequest(opRRQ, "f", "", nil), errEmptyField},
		{append([]byte{0, 1}, "f"...), errNoNUL},
	} {
		if _, err := parseRequest(c.pkt); !errors.Is(err, c.want) {
			t.Errorf("parseRequest(%q) = %v, want %v", c.pkt, err, c.want)
		}
	}
}

// TestPerAddressSlotsFreed: a transfer that ends frees its address's slot, and
// only its own: with a limit of 2 and one transfer still running, one more is
// admitted, a second is not; the bookkeeping is empty when all have ended.
func TestPerAddressSlotsFreed(t *testing.T) {
	var a activeSet
	addr := netip.MustParseAddr("10.0.0.7")
	k := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(addr, port) }
	for _, p := range []uint16{1, 2} {
		if got := a.add(k(p), 100, 2); got != admitted {
			t.Fatalf("transfer %d: %v", p, got)
		}
	}
	if got := a.add(k(3), 100, 2); got != admitAddressFull {
		t.Fatalf("third transfer from one address: %v, want refused", got)
	}
	a.remove(k(1))
	if got := a.add(k(4), 100, 2); got != admitted {
		t.Fatalf("after one ended: %v, want admitted", got)
	}
	if got := a.add(k(5), 100, 2); got != admitAddressFull {
		t.Fatalf("two running again, a third: %v, want refused", got)
	}
	a.remove(k(2))
	a.remove(k(4))
	if len(a.m) != 0 || len(a.perAddr) != 0 {
		t.Fatalf("all ended, still recorded: %v %v", a.m, a.perAddr)
	}
}

// TestReplyFromRequestedAddressIPv4Only: the same as TestReplyFromRequestedAddress
// on an IPv4-only wildcard socket (udp4), where only IP_PKTINFO applies.
func TestReplyFromRequestedAddressIPv4Only(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("destination address reporting is implemented for Linux")
	}
	conn, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &Server{Handler: &memHandler{files: map[string][]byte{"f": []byte("x")}}, Logger: testLogger(t)}
	go s.Serve(testCtx(t, 30*time.Second), conn)
	port := conn.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), port)
	res, err := tftpGet(testCtx(t, 10*time.Second), to, "f", getOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if res.server.Addr() != to.Addr() {
		t.Errorf("reply from %v, want %v", res.server.Addr(), to.Addr())
	}
}

// recorder keeps log records for tests.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// refusal returns the level of the "tftp request refused" record with reason and
// whether it carried an err attribute.
func (r *recorder) refusal(reason string) (level slog.Level, hasErr, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		if rec.Message != "tftp request refused" {
			continue
		}
		var why string
		var e bool
		rec.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "reason":
				why = a.Value.String()
			case "err":
				e = true
			}
			return true
		})
		if why == reason {
			return rec.Level, e, true
		}
	}
	return 0, false, false
}

type failingHandler struct{}

func (failingHandler) ServeTFTP(context.Context, Request) (io.ReadCloser, int64, error) {
	return nil, 0, errors.New("disk on fire")
}

// TestRefusalLogs: refusals are logged with their reason; a missing file (which
// PXE ROMs probe for routinely) at info, a handler failure at warn with its
// error, a write request at warn without one.
func TestRefusalLogs(t *testing.T) {
	for _, c := range []struct {
		name    string
		handler Handler
		pkt     []byte
		reason  string
		level   slog.Level
		withErr bool
	}{
		{"missing", &memHandler{files: map[string][]byte{}}, encodeRequest(opRRQ, "pxelinux.cfg/default", "octet", nil), "file not found", slog.LevelInfo, true},
		{"handler error", failingHandler{}, encodeRequest(opRRQ, "f", "octet", nil), "internal error", slog.LevelWarn, true},
		{"write", &memHandler{}, encodeRequest(opWRQ, "f", "octet", nil), "write request", slog.LevelWarn, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{}
			addr := startServer(t, &Server{Handler: c.handler, Logger: slog.New(rec)})
			cl := newRawClient(t)
			cl.send(addr, c.pkt)
			if b, _ := cl.recv(5 * time.Second); b == nil {
				t.Fatal("no answer")
			}
			var level slog.Level
			var hasErr, ok bool
			waitFor(t, "the refusal logged", func() bool { level, hasErr, ok = rec.refusal(c.reason); return ok })
			if level != c.level || hasErr != c.withErr {
				t.Errorf("logged at %v with err %t, want %v with err %t", level, hasErr, c.level, c.withErr)
			}
		})
	}
}

// TestBytesCounted: a transfer counts the payload it sent, not the packets'
// headers: BytesSent and the OnTransfer result both equal the file's size when
// nothing is lost.
func TestBytesCounted(t *testing.T) {
	data := testData(10_000, 21)
	m := new(Metrics)
	results := make(chan TransferResult, 1)
	addr := startServer(t, &Server{Handler: &memHandler{files: map[string][]byte{"f": data}}, Metrics: m,
		OnTransfer: func(r TransferResult) { results <- r }})
	if _, err := tftpGet(testCtx(t, 10*time.Second), addr, "f", getOpts{options: opts("blksize", "1024")}); err != nil {
		t.Fatal(err)
	}
	var r TransferResult
	select {
	case r = <-results:
	case <-time.After(10 * time.Second):
		t.Fatal("no transfer result")
	}
	// Retransmissions (a timer firing on a loaded machine) are counted too; then
	// the totals can only be larger.
	exact := m.Retransmits.Load() == 0
	for what, got := range map[string]uint64{"OnTransfer's Bytes": uint64(r.Bytes), "Metrics.BytesSent": m.BytesSent.Load()} {
		if got < uint64(len(data)) || exact && got != uint64(len(data)) {
			t.Errorf("%s = %d (retransmits %d), want %d", what, got, m.Retransmits.Load(), len(data))
		}
	}
	if r.Err != nil {
		t.Errorf("transfer result error: %v", r.Err)
	}
}
