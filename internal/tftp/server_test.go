package tftp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// testData returns n deterministic pseudo-random bytes.
func testData(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

// memHandler serves in-memory files; size -1 hides the size.
type memHandler struct {
	files   map[string][]byte
	hideLen bool
	mu      sync.Mutex
	reqs    []Request
}

func (h *memHandler) ServeTFTP(_ context.Context, req Request) (io.ReadCloser, int64, error) {
	h.mu.Lock()
	h.reqs = append(h.reqs, req)
	h.mu.Unlock()
	name, err := CleanName(req.Filename)
	if err != nil {
		return nil, 0, err
	}
	b, ok := h.files[name]
	if !ok {
		return nil, 0, os.ErrNotExist
	}
	size := int64(len(b))
	if h.hideLen {
		size = -1
	}
	return io.NopCloser(bytes.NewReader(b)), size, nil
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func opts(kv ...string) []option {
	var o []option
	for i := 0; i+1 < len(kv); i += 2 {
		o = append(o, option{kv[i], kv[i+1]})
	}
	return o
}

// tsizeOACK adds the tsize the server answers for a file of n bytes (none
// for an empty file) to want.
func tsizeOACK(n int, want map[string]string) map[string]string {
	if n == 0 {
		return want
	}
	if want == nil {
		want = map[string]string{}
	}
	want["tsize"] = strconv.Itoa(n)
	return want
}

func TestTransfer(t *testing.T) {
	text := []byte("line 1\nline 2\r\nbare\rcr\n\n" + string(testData(3000, 9)))
	files := map[string][]byte{"text": text}
	sizes := []int{0, 1, 511, 512, 513, 1024, 1468, 5 * 1468, 16 * 1468, 3 * 16 * 1468, 100_000, 1<<20 + 7}
	for i, n := range sizes {
		files["f"+strconv.Itoa(n)] = testData(n, uint64(i))
	}
	m := new(Metrics)
	// A long timer: on loopback nothing is lost, so any retransmission or
	// duplicate would be a bug, not a slow machine.
	srv := &Server{Handler: &memHandler{files: files}, Metrics: m, MaxBlockSize: 1468, Timeout: 5 * time.Second}
	addr := startServer(t, srv)

	type tc struct {
		name     string
		file     string
		mode     string
		opts     []option
		wantOACK map[string]string // nil: no OACK expected
	}
	var tests []tc
	for _, n := range sizes {
		f := "f" + strconv.Itoa(n)
		tests = append(tests,
			tc{name: f + "/plain", file: f},
			tc{name: f + "/blksize", file: f, opts: opts("blksize", "1468"), wantOACK: map[string]string{"blksize": "1468"}},
			tc{name: f + "/tsize", file: f, opts: opts("tsize", "0"), wantOACK: tsizeOACK(n, nil)},
			tc{name: f + "/windowsize16", file: f, opts: opts("blksize", "1468", "windowsize", "16", "tsize", "0"),
				wantOACK: tsizeOACK(n, map[string]string{"blksize": "1468", "windowsize": "16"})},
			tc{name: f + "/small-blocks-window4", file: f, opts: opts("blksize", "100", "windowsize", "4"),
				wantOACK: map[string]string{"blksize": "100", "windowsize": "4"}},
		)
	}
	tests = append(tests,
		tc{name: "leading slash", file: "/f1"},
		tc{name: "blksize clamped", file: "f100000", opts: opts("blksize", "8192"), wantOACK: map[string]string{"blksize": "1468"}},
		tc{name: "windowsize clamped", file: "f100000", opts: opts("windowsize", "1000"), wantOACK: map[string]string{"windowsize": "64"}},
		tc{name: "timeout echoed", file: "f1024", opts: opts("timeout", "2"), wantOACK: map[string]string{"timeout": "2"}},
		tc{name: "unknown options only: no OACK", file: "f1024", opts: opts("multicast", "", "foo", "bar")},
		tc{name: "invalid values: no OACK", file: "f1024", opts: opts("blksize", "4", "windowsize", "0", "timeout", "999")},
		tc{name: "netascii", file: "text", mode: "netascii"},
		tc{name: "netascii window", file: "text", mode: "NETASCII", opts: opts("blksize", "64", "windowsize", "8", "tsize", "0"),
			wantOACK: map[string]string{"blksize": "64", "windowsize": "8"}}, // no tsize in netascii
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tftpGet(testCtx(t, 20*time.Second), addr, tt.file, getOpts{mode: tt.mode, options: tt.opts})
			if err != nil {
				t.Fatal(err)
			}
			want := files[tt.file[len(tt.file)-len(filepath.Base(tt.file)):]]
			if tt.mode != "" {
				want, _ = io.ReadAll(newNetasciiReader(bytes.NewReader(want)))
			}
			if !bytes.Equal(res.data, want) {
				t.Fatalf("got %d bytes, want %d (content differs)", len(res.data), len(want))
			}
			if fmt.Sprint(res.oack) != fmt.Sprint(tt.wantOACK) {
				t.Errorf("OACK %v, want %v", res.oack, tt.wantOACK)
			}
			blk := 512
			if v, ok := res.oack["blksize"]; ok {
				blk, _ = strconv.Atoi(v)
			}
			// A file of k*blksize bytes ends with an empty block k+1.
			if wantBlocks := uint64(len(want)/blk + 1); res.blocks != wantBlocks {
				t.Errorf("%d blocks, want %d", res.blocks, wantBlocks)
			}
			if res.dupData != 0 {
				t.Errorf("%d duplicate DATA packets on a clean link", res.dupData)
			}
		})
	}
	waitFor(t, "all transfers counted", func() bool { return m.TransfersCompleted.Load() == uint64(len(tests)) })
	if f := m.TransfersFailed.Load() + m.Refused.Load() + m.MalformedPackets.Load(); f != 0 {
		t.Errorf("failed/refused/malformed = %d", f)
	}
	if m.Retransmits.Load() != 0 {
		t.Errorf("retransmits on loopback: %d", m.Retransmits.Load())
	}
	if m.TransfersStarted.Load() != m.Requests.Load() {
		t.Errorf("started %d of %d requests", m.TransfersStarted.Load(), m.Requests.Load())
	}
}

// Block numbers are 16 bits and roll over from 65535 to 0.
func TestRollover(t *testing.T) {
	tests := []struct {
		name   string
		size   int
		window string
		slow   bool // -short keeps the first rollover only
	}{
		{"just past 65535 blocks", 8*65535 + 5, "16", false},
		{"65536 full blocks: final empty block is wire block 1", 8 * 65536, "16", true},
		{"two rollovers", 8*(2*65536+100) + 1, "64", true},
		{"lock-step", 8*65536 + 100, "1", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.slow {
				testkit.Slow(t, "another 65536-block transfer")
			}
			data := testData(tt.size, uint64(i))
			m := new(Metrics)
			addr := startServer(t, &Server{Handler: &memHandler{files: map[string][]byte{"big": data}}, Metrics: m})
			res, err := tftpGet(testCtx(t, 60*time.Second), addr, "big", getOpts{options: opts("blksize", "8", "windowsize", tt.window)})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.data, data) {
				t.Fatalf("content differs: got %d bytes, want %d", len(res.data), len(data))
			}
			if want := uint64(tt.size/8 + 1); res.blocks != want {
				t.Errorf("%d blocks, want %d", res.blocks, want)
			}
			waitFor(t, "completion", func() bool { return m.TransfersCompleted.Load() == 1 })
		})
	}
}

// A file over 32 MiB at the default 512-byte blocks, the case that breaks
// servers without rollover.
func TestRollover33MiB(t *testing.T) {
	testkit.Slow(t, "a 33 MiB transfer")
	const size = 33<<20 + 123
	data := testData(size, 33)
	want := sha256.Sum256(data)
	addr := startServer(t, &Server{Handler: &memHandler{files: map[string][]byte{"big": data}}})
	for _, window := range []string{"1", "64"} {
		t.Run("windowsize="+window, func(t *testing.T) {
			h := sha256.New()
			var o []option
			if window != "1" {
				o = opts("windowsize", window)
			}
			res, err := tftpGet(testCtx(t, 120*time.Second), addr, "big", getOpts{options: o, w: h})
			if err != nil {
				t.Fatal(err)
			}
			if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
				t.Fatalf("sha256 differs after %d blocks", res.blocks)
			}
			if res.blocks != size/512+1 {
				t.Errorf("%d blocks", res.blocks)
			}
		})
	}
}

func TestLostACKs(t *testing.T) {
	data := testData(40*512+17, 1)
	tests := []struct {
		name   string
		window string
		drop   map[uint64]bool // first ACK of these blocks is lost
	}{
		{"lock-step", "1", map[uint64]bool{0: true, 3: true, 7: true, 40: true}},
		{"window 4", "4", map[uint64]bool{8: true, 16: true, 40: true}},
		{"window 8, ACK lost twice", "8", map[uint64]bool{8: true, 24: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := new(Metrics)
			addr := startServer(t, &Server{Handler: &memHandler{files: map[string][]byte{"f": data}}, Metrics: m, Timeout: 30 * time.Millisecond})
			res, err := tftpGet(testCtx(t, 20*time.Second), addr, "f", getOpts{
				options: opts("windowsize", tt.window),
				timeout: 5 * time.Second, // only the server's timer recovers
				dropACK: func(block uint64, nth int) bool {
					return tt.drop[block] && (nth == 1 || (tt.name == "window 8, ACK lost twice" && nth == 2))
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.data, data) {
				t.Fatal("content differs")
			}
			waitFor(t, "completion", func() bool { return m.TransfersCompleted.Load() == 1 })
			if m.Retransmits.Load() == 0 {
				t.Error("no retransmission counted")
			}
		})
	}
	// Losing the final ACK for good would leave the server resending the last
	// block; the transfer still succeeds for the client, the server gives up.
}

// A lost DATA block in a window makes the client ACK the block before it. If
// that is a block in the middle of the window, the server restarts the window
// right after it (RFC 7440 section 4) instead of waiting for its timer. If the
// first block of a window is lost, the client's ACK repeats the previous one,
// which the server cannot tell from a duplicate and must ignore (Sorcerer's
// Apprentice); then the retransmission timer recovers.
func TestLostDataRestartsWindow(t *testing.T) {
	data := testData(64*512+3, 2) // 65 blocks
	tests := []struct {
		name    string
		lost    map[uint64]bool
		timeout time.Duration // server's retransmission timer
		max     time.Duration
	}{
		// Windows of 8: 1-8 (5 lost, ACK 4), 5-12, 13-20 (15 lost, ACK 14),
		// 15-22, 23-30 (28 lost, ACK 27), 28-35, ...
		{name: "mid-window losses, no timer", lost: map[uint64]bool{5: true, 15: true, 28: true}, timeout: 10 * time.Second, max: 5 * time.Second},
		{name: "first block of a window lost", lost: map[uint64]bool{9: true}, timeout: 50 * time.Millisecond, max: 5 * time.Second},
		{name: "last block lost", lost: map[uint64]bool{65: true}, timeout: 50 * time.Millisecond, max: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := new(Metrics)
			addr := startServer(t, &Server{Handler: &memHandler{files: map[string][]byte{"f": data}}, Metrics: m, Timeout: tt.timeout})
			start := time.Now()
			res, err := tftpGet(testCtx(t, 20*time.Second), addr, "f", getOpts{
				options:  opts("windowsize", "8"),
				timeout:  10 * time.Second, // the client never times out here
				dropData: func(block uint64, nth int) bool { return tt.lost[block] && nth == 1 },
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.data, data) {
				t.Fatal("content differs")
			}
			if d := time.Since(start); d > tt.max {
				t.Errorf("transfer took %v: the server waited for its timer instead of restarting the window", d)
			}
			waitFor(t, "completion", func() bool { return m.TransfersCompleted.Load() == 1 })
			if m.Retransmits.Load() == 0 {
				t.Error("no retransmission counted")
			}
		})
	}
}

// Duplicate ACKs must never trigger resends (Sorcerer's Apprentice, RFC 1123
// section 4.2.3.1): with each ACK sent three times, every block still arrives
// exactly once.
func TestDuplicateACKsNoDuplicateData(t *testing.T) {
	data := testData(50*512, 3)
	for _, window := range []string{"1", "4"} {
		t.Run("windowsize="+window, func(t *testing.T) {
			m := new(Metrics)
			addr := startServer(t, &Server{Handler: &memHandler{files: map[string][]byte{"f": data}}, Metrics: m, Timeout: 5 * time.Second})
			res, err := tftpGet(testCtx(t, 20*time.Second), addr, "f", getOpts{options: opts("windowsize", window), ackCopies: 3})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.data, data) {
				t.Fatal("content differs")
			}
			if res.dataPackets != int(res.blocks) || res.dupData != 0 {
				t.Errorf("%d DATA packets for %d blocks (%d duplicates)", res.dataPackets, res.blocks, res.dupData)
			}
			waitFor(t, "completion", func() bool { return m.TransfersCompleted.Load() == 1 })
			if r := m.Retransmits.Load(); r != 0 {
				t.Errorf("%d retransmissions", r)
			}
		})
	}
}

// rawClient is a bare UDP socket for protocol-level tests.
type rawClient struct {
	t    testing.TB
	conn *net.UDPConn
}

func newRawClient(t testing.TB) *rawClient {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t, c}
}

func (c *rawClient) send(to netip.AddrPort, b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDPAddrPort(b, to); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next packet, or nil after d.
func (c *rawClient) recv(d time.Duration) ([]byte, netip.AddrPort) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, 70000)
	n, from, err := c.conn.ReadFromUDPAddrPort(b)
	if err != nil {
		if isTimeout(err) {
			return nil, from
		}
		c.t.Fatal(err)
	}
	return b[:n], from
}

func (c *rawClient) expectError(d time.Duration, code ErrorCode) netip.AddrPort {
	c.t.Helper()
	b, from := c.recv(d)
	if b == nil {
		c.t.Fatalf("no ERROR %d received", code)
	}
	got, msg, err := parseError(b)
	if err != nil {
		c.t.Fatalf("want ERROR %d, got %q (%v)", code, b, err)
	}
	if got != code {
		c.t.Fatalf("ERROR %d (%q), want code %d", got, msg, code)
	}
	return from
}

func TestRetriesExhausted(t *testing.T) {
	m := new(Metrics)
	addr := startServer(t, &Server{
		Handler: &memHandler{files: map[string][]byte{"f": testData(2000, 4)}}, Metrics: m,
		Timeout: 20 * time.Millisecond, MaxTimeout: 80 * time.Millisecond, Retries: 4,
	})
	c := newRawClient(t)
	c.send(addr, encodeRequest(opRRQ, "f", "octet", nil))
	var times []time.Time
	for {
		b, _ := c.recv(5 * time.Second)
		if b == nil {
			t.Fatal("server went silent without an ERROR")
		}
		if op, _ := peekOpcode(b); op == opERROR {
			break
		}
		block, _, err := parseData(b)
		if err != nil || block != 1 {
			t.Fatalf("want DATA 1, got %q", b)
		}
		times = append(times, time.Now())
	}
	if len(times) != 5 {
		t.Fatalf("DATA 1 sent %d times, want 1 + 4 retries", len(times))
	}
	// Backoff 20, 40, 80, 80 ms (capped). Timers never fire early, so the
	// lower bounds hold however loaded the machine is (with some slack for
	// the receive side being late on the earlier packet).
	if total, last := times[4].Sub(times[0]), times[4].Sub(times[3]); total < 180*time.Millisecond || last < 60*time.Millisecond {
		t.Errorf("no exponential backoff: total %v, last gap %v (want about 220ms and 80ms)", total, last)
	}
	waitFor(t, "failure counted", func() bool { return m.TransfersFailed.Load() == 1 })
}

func TestRefused(t *testing.T) {
	root, _ := makeTree(t)
	m := new(Metrics)
	addr := startServer(t, &Server{Handler: DirHandler(root, nil), Metrics: m})
	tests := []struct {
		name string
		pkt  []byte
		code ErrorCode
	}{
		{"WRQ", encodeRequest(opWRQ, "pxelinux.0", "octet", nil), ErrCodeAccessViolation},
		{"WRQ new file", encodeRequest(opWRQ, "new", "octet", opts("tsize", "100")), ErrCodeAccessViolation},
		{"dotdot", encodeRequest(opRRQ, "../secret", "octet", nil), ErrCodeAccessViolation},
		{"slash dotdot", encodeRequest(opRRQ, "/../secret", "octet", nil), ErrCodeAccessViolation},
		{"nested dotdot", encodeRequest(opRRQ, "sub/../../secret", "octet", opts("blksize", "1468")), ErrCodeAccessViolation},
		{"symlink escaping root", encodeRequest(opRRQ, "link-escape", "octet", nil), ErrCodeAccessViolation},
		{"absolute symlink", encodeRequest(opRRQ, "link-absolute", "octet", nil), ErrCodeAccessViolation},
		{"through dir symlink", encodeRequest(opRRQ, "dirlink-escape/secret", "octet", nil), ErrCodeAccessViolation},
		{"directory", encodeRequest(opRRQ, "sub", "octet", nil), ErrCodeAccessViolation},
		{"root directory", encodeRequest(opRRQ, "/", "octet", nil), ErrCodeAccessViolation},
		{"missing", encodeRequest(opRRQ, "pxelinux.cfg/01-52-54-00-12-34-56", "octet", nil), ErrCodeFileNotFound},
		{"mail mode", encodeRequest(opRRQ, "pxelinux.0", "mail", nil), ErrCodeIllegalOperation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newRawClient(t)
			c.send(addr, tt.pkt)
			from := c.expectError(5*time.Second, tt.code)
			if from.Port() == addr.Port() {
				t.Errorf("ERROR came from the request port, want a new TID")
			}
		})
	}
	waitFor(t, "refusals counted", func() bool { return m.Refused.Load() == uint64(len(tests)) })
	if m.TransfersStarted.Load() != 0 {
		t.Errorf("%d transfers started", m.TransfersStarted.Load())
	}
}

func TestUnknownTID(t *testing.T) {
	data := testData(20*512, 5)
	m := new(Metrics)
	addr := startServer(t, &Server{Handler: &memHandler{files: map[string][]byte{"f": data}}, Metrics: m, Timeout: 5 * time.Second})
	intruder := newRawClient(t)
	res, err := tftpGet(testCtx(t, 20*time.Second), addr, "f", getOpts{onBlock: func(block uint64, server netip.AddrPort) {
		if block != 2 {
			return
		}
		// A stray ACK and a stray ERROR to the transfer's port from another
		// TID: each gets ERROR 5 and neither disturbs the transfer.
		intruder.send(server, encodeACK(2))
		if from := intruder.expectError(5*time.Second, ErrCodeUnknownTID); from != server {
			t.Errorf("ERROR 5 from %v, want %v", from, server)
		}
		intruder.send(server, encodeError(ErrCodeNotDefined, "go away"))
		intruder.expectError(5*time.Second, ErrCodeUnknownTID)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.data, data) {
		t.Fatal("content differs")
	}
	if res.dupData != 0 {
		t.Errorf("%d duplicate DATA packets", res.dupData)
	}
	waitFor(t, "completion", func() bool { return m.TransfersCompleted.Load() == 1 })
	if got := m.UnknownTID.Load(); got != 2 {
		t.Errorf("UnknownTID = %d, want 2", got)
	}
}

func TestMalformedPackets(t *testing.T) {
	data := testData(3000, 6)
	m := new(Metrics)
	addr := startServer(t, &Server{Handler: &memHandler{files: map[string][]byte{"f": data}}, Metrics: m})
	junk := [][]byte{
		{}, {0}, {0, 1}, {0, 1, 'f'}, []byte("\x00\x01f\x00octet"), []byte("\x00\x01\x00octet\x00"),
		{0, 3, 0, 1, 'x'}, encodeACK(1), encodeError(0, "x"), encodeOACK(nil), {0xff, 0xff, 1, 2, 3},
		testData(1400, 7),
	}
	c := newRawClient(t)
	for _, j := range junk {
		c.send(addr, j)
	}
	// The server is still healthy, and junk on a transfer socket from the
	// client's own TID is dropped too.
	res, err := tftpGet(testCtx(t, 20*time.Second), addr, "f", getOpts{onBlock: func(block uint64, server netip.AddrPort) {}})
	if err != nil || !bytes.Equal(res.data, data) {
		t.Fatalf("transfer after junk: %v", err)
	}
	waitFor(t, "junk counted", func() bool { return m.MalformedPackets.Load() == uint64(len(junk)) })
	if b, _ := c.recv(100 * time.Millisecond); b != nil {
		t.Errorf("junk was answered with %q", b)
	}

	// Junk from the client's own TID on the transfer socket.
	c2 := newRawClient(t)
	c2.send(addr, encodeRequest(opRRQ, "f", "octet", nil))
	b, server := c2.recv(5 * time.Second)
	if blk, _, err := parseData(b); err != nil || blk != 1 {
		t.Fatalf("want DATA 1: %q", b)
	}
	before := m.MalformedPackets.Load()
	for _, j := range [][]byte{{}, {0, 4, 0}, {0, 5}, {0, 3, 0, 1}, encodeRequest(opRRQ, "f", "octet", nil)} {
		c2.send(server, j)
	}
	c2.send(server, encodeACK(1))
	if b, _ := c2.recv(5 * time.Second); b == nil {
		t.Fatal("transfer stalled after junk")
	} else if blk, _, _ := parseData(b); blk != 2 {
		t.Fatalf("want DATA 2, got %q", b)
	}
	waitFor(t, "transfer junk counted", func() bool { return m.MalformedPackets.Load() == before+5 })
}

func TestDuplicateRRQ(t *testing.T) {
	m := new(Metrics)
	addr := startServer(t, &Server{Handler: &memHandler{files: map[string][]byte{"f": []byte("tiny")}}, Metrics: m, Timeout: 5 * time.Second})
	c := newRawClient(t)
	rrq := encodeRequest(opRRQ, "f", "octet", nil)
	c.send(addr, rrq)
	c.send(addr, rrq) // a retransmitted RRQ
	b, server := c.recv(5 * time.Second)
	if blk, p, err := parseData(b); err != nil || blk != 1 || string(p) != "tiny" {
		t.Fatalf("want DATA 1, got %q", b)
	}
	// The server reads the second RRQ while the first transfer waits for ACK 1.
	waitFor(t, "duplicate counted", func() bool { return m.DuplicateRequests.Load() == 1 })
	if b, from := c.recv(100 * time.Millisecond); b != nil {
		t.Fatalf("second transfer started: %q from %v", b, from)
	}
	c.send(server, encodeACK(1))
	waitFor(t, "completion", func() bool { return m.TransfersCompleted.Load() == 1 })
	if m.Requests.Load() != 1 {
		t.Errorf("Requests = %d", m.Requests.Load())
	}
}

// PXE ROMs often ask for tsize only, then abort with an ERROR to learn the size.
func TestClientAbortAfterOACK(t *testing.T) {
	m := new(Metrics)
	addr := startServer(t, &Server{Handler: &memHandler{files: map[string][]byte{"f": testData(4096, 8)}}, Metrics: m})
	res, err := tftpGet(testCtx(t, 10*time.Second), addr, "f", getOpts{options: opts("tsize", "0"), abortAfterOACK: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.oack["tsize"] != "4096" {
		t.Errorf("OACK %v", res.oack)
	}
	waitFor(t, "abort counted", func() bool { return m.TransfersAborted.Load() == 1 })
	if m.TransfersFailed.Load() != 0 {
		t.Error("abort counted as failure")
	}
}

func TestHandlerSeesRequest(t *testing.T) {
	h := &memHandler{files: map[string][]byte{"ipxe.efi": []byte("efi")}, hideLen: true}
	addr := startServer(t, &Server{Handler: h})
	res, err := tftpGet(testCtx(t, 10*time.Second), addr, "/ipxe.efi", getOpts{mode: "octet", options: opts("TSIZE", "0", "x-kiln", "1")})
	if err != nil || string(res.data) != "efi" {
		t.Fatalf("%q, %v", res.data, err)
	}
	// Size unknown: tsize declined, and with nothing else understood, no OACK.
	if res.oack != nil {
		t.Errorf("OACK %v with unknown size", res.oack)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.reqs) != 1 {
		t.Fatalf("%d requests", len(h.reqs))
	}
	r := h.reqs[0]
	if r.Filename != "/ipxe.efi" || r.Mode != "octet" || r.Options["tsize"] != "0" || r.Options["x-kiln"] != "1" || !r.RemoteAddr.Addr().IsLoopback() || r.RemoteAddr.Port() == 0 {
		t.Errorf("request %+v", r)
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

func TestReadErrorMidTransfer(t *testing.T) {
	m := new(Metrics)
	h := HandlerFunc(func(context.Context, Request) (io.ReadCloser, int64, error) {
		return io.NopCloser(&failingReader{n: 3 * 512}), 10 * 512, nil
	})
	addr := startServer(t, &Server{Handler: h, Metrics: m})
	res, err := tftpGet(testCtx(t, 10*time.Second), addr, "f", getOpts{})
	var re *remoteError
	if !errors.As(err, &re) || re.code != ErrCodeNotDefined {
		t.Fatalf("want ERROR 0, got %v", err)
	}
	if res.blocks != 3 {
		t.Errorf("%d blocks before the error", res.blocks)
	}
	waitFor(t, "failure counted", func() bool { return m.TransfersFailed.Load() == 1 })
}

type closeTracker struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeTracker) Close() error { c.closed.Store(true); return nil }

// Cancelling Serve's context stops in-flight transfers: the client gets an
// ERROR, the content is closed and Serve returns once every goroutine is done.
func TestShutdown(t *testing.T) {
	before := runtime.NumGoroutine()
	ct := &closeTracker{Reader: bytes.NewReader(testData(10*512, 9))}
	started := make(chan struct{})
	h := HandlerFunc(func(context.Context, Request) (io.ReadCloser, int64, error) {
		close(started)
		return ct, 10 * 512, nil
	})
	m := new(Metrics)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- (&Server{Handler: h, Metrics: m, Timeout: 10 * time.Second, Logger: testLogger(t)}).Serve(ctx, conn)
	}()
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	c := newRawClient(t)
	c.send(addr, encodeRequest(opRRQ, "f", "octet", nil))
	<-started
	if b, _ := c.recv(5 * time.Second); b == nil {
		t.Fatal("no DATA 1")
	}
	// The server now waits (10 s timer) for ACK 1 that never comes.
	t0 := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	c.expectError(5*time.Second, ErrCodeNotDefined)
	if !ct.closed.Load() {
		t.Error("content not closed")
	}
	if m.TransfersFailed.Load() != 1 {
		t.Errorf("failed = %d", m.TransfersFailed.Load())
	}
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

func TestServeErrors(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := (&Server{}).Serve(context.Background(), conn); err == nil {
		t.Error("Serve without Handler succeeded")
	}
	// A closed socket ends Serve with an error, not a hang.
	c2, _ := net.ListenPacket("udp", "127.0.0.1:0")
	c2.Close()
	if err := (&Server{Handler: &memHandler{}}).Serve(testCtx(t, 5*time.Second), c2); err == nil {
		t.Error("Serve on a closed socket succeeded")
	}
	// ListenAndServe returns nil when its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := (&Server{Handler: &memHandler{}}).ListenAndServe(ctx, "127.0.0.1:0"); err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}
	if err := (&Server{Handler: &memHandler{}}).ListenAndServe(context.Background(), "256.0.0.1:0"); err == nil {
		t.Error("ListenAndServe on a bad address succeeded")
	}
}

func TestConcurrentTransfers(t *testing.T) {
	files := map[string][]byte{}
	for i := range 16 {
		files["f"+strconv.Itoa(i)] = testData(20_000+i*1000, uint64(100+i))
	}
	m := new(Metrics)
	addr := startServer(t, &Server{Handler: &memHandler{files: files}, Metrics: m})
	var wg sync.WaitGroup
	errs := make(chan error, len(files))
	for name, data := range files {
		wg.Go(func() {
			res, err := tftpGet(testCtx(t, 30*time.Second), addr, name, getOpts{options: opts("blksize", "1468", "windowsize", "4")})
			if err == nil && !bytes.Equal(res.data, data) {
				err = fmt.Errorf("%s: content differs", name)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	waitFor(t, "completion", func() bool { return m.TransfersCompleted.Load() == uint64(len(files)) })
}

// On a wildcard listener the reply must come from the address the client sent
// to (IP_PKTINFO), or clients that check the source address drop it.
func TestReplyFromRequestedAddress(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("destination address reporting is implemented for Linux")
	}
	listeners := []string{"0.0.0.0:0"}
	if ln, err := net.ListenPacket("udp", "[::]:0"); err == nil {
		ln.Close()
		listeners = append(listeners, "[::]:0") // dual-stack: IPv4 clients arrive v4-mapped
	}
	for _, listen := range listeners {
		addr := startServerOn(t, &Server{Handler: &memHandler{files: map[string][]byte{"f": []byte("x")}}}, listen)
		for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.1.2.3"} {
			t.Run(listen+"/"+ip, func(t *testing.T) {
				to := netip.AddrPortFrom(netip.MustParseAddr(ip), addr.Port())
				res, err := tftpGet(testCtx(t, 10*time.Second), to, "f", getOpts{})
				if err != nil {
					t.Fatal(err)
				}
				if res.server.Addr() != to.Addr() {
					t.Errorf("reply from %v, want %v", res.server.Addr(), to.Addr())
				}
			})
		}
	}
}

func TestIPv6(t *testing.T) {
	ln, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	data := testData(10_000, 10)
	for _, listen := range []string{"[::1]:0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			addr := startServerOn(t, &Server{Handler: &memHandler{files: map[string][]byte{"f": data}}}, listen)
			to := netip.AddrPortFrom(netip.IPv6Loopback(), addr.Port())
			res, err := tftpGet(testCtx(t, 10*time.Second), to, "f", getOpts{options: opts("blksize", "1468", "windowsize", "4")})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.data, data) || res.server.Addr() != to.Addr() {
				t.Errorf("content ok=%v, reply from %v", bytes.Equal(res.data, data), res.server)
			}
			// The IPv6 header is 20 bytes longer: 1448 fits a 1500 MTU.
			if res.oack["blksize"] != "1448" {
				t.Errorf("IPv6 blksize %q, want 1448", res.oack["blksize"])
			}
		})
	}
}
