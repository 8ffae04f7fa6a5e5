package tftp

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// spoofedFlood sends one read request from each of n fresh sockets on the
// loopback address from (127.0.0.0/8 is all local on Linux, so each address
// stands for another client) and never acknowledges anything. It returns how
// many were answered with a transfer (OACK or DATA) and how many with the
// "server busy" ERROR.
func spoofedFlood(t *testing.T, server netip.AddrPort, from string, n int, options []option) (admitted, busy int) {
	t.Helper()
	var conns []*net.UDPConn
	for range n {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)})
		if err != nil {
			t.Fatalf("bind %s: %v", from, err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.WriteToUDPAddrPort(encodeRequest(opRRQ, "f", "octet", options), server); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	b := make([]byte, 2048)
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		nr, _, err := c.ReadFromUDPAddrPort(b)
		if err != nil {
			t.Fatalf("a flooding client got no answer at all: %v", err)
		}
		switch op, _ := peekOpcode(b[:nr]); op {
		case opOACK, opDATA:
			admitted++
		case opERROR:
			code, msg, _ := parseError(b[:nr])
			if code != ErrCodeNotDefined || msg != "server busy" {
				t.Fatalf("refusal: ERROR %d %q, want 0 \"server busy\"", code, msg)
			}
			busy++
		default:
			t.Fatalf("unexpected answer %q", b[:nr])
		}
	}
	return admitted, busy
}

func needLoopbackRange(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("binds 127.0.0.2 and up, which only Linux routes to loopback without setup")
	}
}

// TestFloodCapped: read requests that never ACK (as spoofed ones never do) hold
// at most MaxTransfersPerAddress transfers per client address and MaxTransfers in
// all; the rest get "server busy" at once, are counted, and a legitimate client
// on another address still gets its file during the flood.
func TestFloodCapped(t *testing.T) {
	needLoopbackRange(t)
	data := testData(50_000, 7)
	m := new(Metrics)
	addr := startServer(t, &Server{
		Handler: &memHandler{files: map[string][]byte{"f": data}}, Metrics: m,
		MaxTransfers: 12, MaxTransfersPerAddress: 4,
		Timeout: time.Minute, FirstACKTimeout: time.Minute, // the flood holds its slots for the whole test
	})
	// The timeout option is what the attack of issue 14 used to hold slots.
	flood := opts("timeout", "255", "tsize", "0")
	for _, from := range []string{"127.0.0.2", "127.0.0.3"} {
		admitted, busy := spoofedFlood(t, addr, from, 20, flood)
		if admitted != 4 || busy != 16 {
			t.Fatalf("flood from %s: %d transfers, %d busy; want 4 and 16 (per-address cap)", from, admitted, busy)
		}
	}
	res, err := tftpGet(testCtx(t, 20*time.Second), addr, "f", getOpts{options: opts("blksize", "1468")})
	if err != nil || !bytes.Equal(res.data, data) {
		t.Fatalf("legitimate transfer during the flood: %v", err)
	}
	// Three more addresses: the total cap (12, of which 8 held) binds first.
	total := 0
	for _, from := range []string{"127.0.0.4", "127.0.0.5", "127.0.0.6"} {
		admitted, _ := spoofedFlood(t, addr, from, 6, flood)
		total += admitted
	}
	if total != 4 {
		t.Fatalf("%d more transfers admitted with 8 of 12 slots held, want 4 (total cap)", total)
	}
	if got := m.RefusedBusy.Load(); got != 16+16+(18-4) {
		t.Errorf("RefusedBusy = %d, want %d", got, 16+16+18-4)
	}
	if got := m.RefusedBusyAddress.Load(); got < 32 {
		t.Errorf("RefusedBusyAddress = %d, want at least 32", got)
	}
}

// TestFirstACKTimeout: before the client's first ACK, the server's own timeout
// and retries apply, not a client-chosen timeout=255, so a request that is never
// acknowledged gives its slot back after a few short retransmissions; once the
// client has acknowledged, its negotiated timeout is honoured.
func TestFirstACKTimeout(t *testing.T) {
	m := new(Metrics)
	addr := startServer(t, &Server{
		Handler: &memHandler{files: map[string][]byte{"f": testData(5000, 8)}}, Metrics: m,
		Timeout: 10 * time.Millisecond, FirstACKTimeout: 20 * time.Millisecond, Retries: 2,
		MaxTransfersPerAddress: 1,
	})
	c := newRawClient(t)
	c.send(addr, encodeRequest(opRRQ, "f", "octet", opts("timeout", "255")))
	// OACK, two retransmissions, then ERROR "timeout": within the receive
	// deadline only if the client's 255 s were not used.
	for i := 0; ; i++ {
		b, _ := c.recv(10 * time.Second)
		if b == nil {
			t.Fatal("no answer: the server waits for the client's 255 s before the first ACK")
		}
		if op, _ := peekOpcode(b); op == opERROR {
			break
		}
		if i > 3 {
			t.Fatal("more OACKs than 1 + Retries")
		}
	}
	waitFor(t, "the slot to be released", func() bool { return m.TransfersFailed.Load() == 1 })
	// The slot is free: the same address (cap 1) gets a transfer again.
	if res, err := tftpGet(testCtx(t, 20*time.Second), addr, "f", getOpts{}); err != nil || len(res.data) != 5000 {
		t.Fatalf("after the first-ACK timeout: %v", err)
	}

	waitFor(t, "the transfer's slot to be released", func() bool { return m.TransfersCompleted.Load() == 1 })

	// After ACK 0 the client's timeout (1 s here) is honoured: the server does
	// not resend DATA 1 after its own 10 ms.
	c2 := newRawClient(t)
	c2.send(addr, encodeRequest(opRRQ, "f", "octet", opts("timeout", "1")))
	b, tid := c2.recv(10 * time.Second)
	if op, _ := peekOpcode(b); op != opOACK {
		t.Fatalf("want OACK, got %q", b)
	}
	c2.send(tid, encodeACK(0))
	if b, _ := c2.recv(10 * time.Second); b == nil {
		t.Fatal("no DATA 1")
	}
	first := time.Now()
	if b, _ := c2.recv(10 * time.Second); b == nil {
		t.Fatal("no retransmission of DATA 1")
	}
	if gap := time.Since(first); gap < 900*time.Millisecond {
		t.Errorf("DATA 1 resent after %v: the negotiated 1 s timeout was not honoured after the first ACK", gap)
	}
}

// TestHTTPUnaffectedByFlood: an HTTP server in the same process keeps answering
// while a TFTP flood holds every slot.
func TestHTTPUnaffectedByFlood(t *testing.T) {
	needLoopbackRange(t)
	addr := startServer(t, &Server{
		Handler:      &memHandler{files: map[string][]byte{"f": testData(5000, 9)}},
		MaxTransfers: 64, MaxTransfersPerAddress: 16, Timeout: time.Minute, FirstACKTimeout: time.Minute,
	})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer web.Close()
	for i := range 8 {
		spoofedFlood(t, addr, "127.0.1."+string(rune('1'+i)), 32, opts("timeout", "255"))
	}
	for range 50 {
		resp, err := web.Client().Get(web.URL)
		if err != nil {
			t.Fatalf("HTTP during the flood: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok" {
			t.Fatalf("HTTP during the flood: %q", b)
		}
	}
}
