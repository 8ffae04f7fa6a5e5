package flood

import (
	"cmp"
	"context"
	"crypto/tls"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/kilnhq/kiln/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m.Run)) }

// The machines: one agent-booting profile, and machines whose MACs the legitimate
// clients ask for (52:54:00:aa:00:01 ...).
func manifests(machines int) string {
	s := `kind: Artifact
metadata: {name: kiln-agent-kernel}
spec: {source: vmlinuz}
---
kind: Artifact
metadata: {name: kiln-agent-initrd}
spec: {source: initrd}
---
kind: Profile
metadata: {name: agent}
spec: {boot: {agent: true}}
`
	for i := 1; i <= machines; i++ {
		s += fmt.Sprintf("---\nkind: Machine\nmetadata: {name: m%d}\nspec: {profile: agent, interfaces: [{mac: \"52:54:00:aa:%02x:%02x\"}]}\n", i, i/256, i%256)
	}
	return s
}

func need(t *testing.T) {
	if os.Getenv("KILN_FLOOD") != "1" {
		t.Skip("a measurement: set KILN_FLOOD=1 (make bench-flood)")
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// clientFrom is an HTTP client whose connections come from the loopback address src.
func clientFrom(src string, conns int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: conns}}
}

func hit(c *http.Client, method, url string) int {
	req, _ := http.NewRequest(method, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

type counts struct{ events, audit, objects, bytes int64 }

func measure(t *testing.T, dir string) counts {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "kiln.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var c counts
	for q, p := range map[string]*int64{"SELECT count(*) FROM events": &c.events, "SELECT count(*) FROM audit": &c.audit, "SELECT count(*) FROM objects": &c.objects} {
		if err := db.QueryRow(q).Scan(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"kiln.db", "kiln.db-wal"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err == nil {
			c.bytes += st.Size()
		}
	}
	return c
}

// TestFloodGrowth floods /ipxe (a known machine), junk POST /enroll and
// /phone-home from one address (floodSource), N requests each (KILN_FLOOD_N,
// default 10,000), and reports the rows and bytes the database grew by.
func TestFloodGrowth(t *testing.T) {
	need(t)
	n := envInt("KILN_FLOOD_N", 10000)
	dir := filepath.Join(t.TempDir(), "data")
	s := testkit.Serve(t, testkit.ServeOptions{DataDir: dir})
	s.MustKiln(manifests(1), "apply", "-f", "-")
	s.Stop()
	before := measure(t, dir)
	s = testkit.Serve(t, testkit.ServeOptions{DataDir: dir})
	c := clientFrom(floodSource, 16)
	for _, ep := range []struct{ method, path string }{
		{"GET", "/ipxe?mac=52-54-00-aa-00-01&buildarch=x86_64&platform=efi"},
		{"POST", "/enroll"},
		{"GET", "/phone-home?mac=52-54-00-aa-00-01&msg=up"},
	} {
		codes := map[int]int{}
		var mu sync.Mutex
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					code := hit(c, ep.method, s.URL+ep.path)
					mu.Lock()
					codes[code]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		t.Logf("%s %s x %d in %s: status codes %v", ep.method, ep.path, n, time.Since(start).Round(time.Millisecond), codes)
	}
	s.Stop() // flushes pending refusal counts, checkpoints the WAL
	after := measure(t, dir)
	t.Logf("RESULT growth per %d requests to each of /ipxe, /enroll, /phone-home from one address: events +%d, audit +%d, objects +%d, database +%d KiB",
		n, after.events-before.events, after.audit-before.audit, after.objects-before.objects, (after.bytes-before.bytes)/1024)
	if os.Getenv("KILN_FLOOD_REPORT_ONLY") == "" && after.audit-before.audit+after.events-before.events > int64(n)/10 {
		t.Errorf("a flood of %d requests per endpoint from one address added %d audit and %d event rows", n, after.audit-before.audit, after.events-before.events)
	}
}

// floodSource is the flooder's address. The legitimate clients have others:
// 127.0.1.x ask for scripts (scriptClientAddr), 127.0.2.1 and up enroll
// (agentAddr), as machines on a provisioning network would, each its own.
const floodSource = "127.0.0.9"

// scriptClientAddr is the address of legitimate script client i (1..250).
func scriptClientAddr(i int) string { return fmt.Sprintf("127.0.1.%d", i) }

// TestFloodBench measures what legitimate clients get with and without a flood, in
// one run against one `kiln serve` (HTTP, HTTPS and TFTP on loopback), D seconds
// (KILN_FLOOD_SECONDS, default 10) for each of four phases:
//
//   - scripts: K clients (KILN_FLOOD_CLIENTS, default and at most 250) on
//     127.0.1.1..127.0.1.K, each asking for its own machine's script 4 times a
//     second (1,000/s offered by 250);
//   - enrollments: A agents at a time (KILN_FLOOD_AGENTS, default 16) enrolling new
//     machines with the agent's own code over HTTPS, each enrollment from an address
//     of its own (127.0.2.1 and up), at most E per phase (KILN_FLOOD_ENROLLS,
//     default 20,000);
//
// each first alone, then while floodSource floods /ipxe (HTTP), junk POST /enroll
// (HTTPS, where the agents enroll; 16 connections in all, as fast as they are
// answered) and sends TFTP read requests as fast as a UDP socket writes.
func TestFloodBench(t *testing.T) {
	need(t)
	k := min(envInt("KILN_FLOOD_CLIENTS", 250), 250)
	secs := envInt("KILN_FLOOD_SECONDS", 10)
	tftpAddr := freeUDPAddr(t)
	s := testkit.Serve(t, testkit.ServeOptions{HTTPS: true, Args: []string{"--tftp-listen=" + tftpAddr, "--ipxe-dir=" + t.TempDir()}})
	s.MustKiln(manifests(k), "apply", "-f", "-")
	agents := newEnrollLoad(t, s)

	type load struct {
		name string
		run  func(ctx context.Context) string
	}
	for _, l := range []load{
		{"scripts", func(ctx context.Context) string { return scriptLoad(ctx, t, s, k) }},
		{"enroll", agents.run},
	} {
		for _, flooding := range []bool{false, true} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
			var f *flood
			if flooding {
				f = startFlood(ctx, s, tftpAddr)
			}
			start := time.Now()
			got := l.run(ctx)
			cancel() // the enrollment load may end before the clock: so does the flood
			el := time.Since(start).Seconds()
			flooder := "no flood"
			if f != nil {
				f.wait()
				flooder = fmt.Sprintf("the flooder got %.0f HTTP answers/s and sent %.0f TFTP RRQ/s", float64(f.http.Load())/el, float64(f.tftp.Load())/el)
			}
			t.Logf("RESULT %s flood=%v (%.1f s): %s; %s", l.name, flooding, el, got, flooder)
		}
	}
}

// scriptLoad runs the k legitimate script clients until ctx ends and says what they
// got.
func scriptLoad(ctx context.Context, t *testing.T, s *testkit.Server, k int) string {
	var okN, limN atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := 1; i <= k; i++ {
		c := clientFrom(scriptClientAddr(i), 1)
		url := fmt.Sprintf("%s/ipxe?mac=52-54-00-aa-%02x-%02x&buildarch=x86_64&platform=efi", s.URL, i/256, i%256)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// At most 4 requests/s each: a busy machine (iPXE retrying, configs),
			// under the default per-address limit of 5/s.
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for ctx.Err() == nil {
				switch hit(c, "GET", url) {
				case http.StatusOK:
					okN.Add(1)
				case http.StatusTooManyRequests:
					limN.Add(1)
				}
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		}()
	}
	wg.Wait()
	if okN.Load() == 0 {
		t.Errorf("legitimate clients got no script at all")
	}
	return fmt.Sprintf("%d legitimate clients got %.0f scripts/s (%d refused 429)", k, float64(okN.Load())/time.Since(start).Seconds(), limN.Load())
}

// flood counts what the flooder did.
type flood struct {
	http, tftp atomic.Int64
	wg         sync.WaitGroup
}

func (f *flood) wait() { f.wg.Wait() }

// startFlood floods from floodSource until ctx ends: /ipxe on the HTTP listener and
// junk POST /enroll on the HTTPS one (16 connections, alternating), and TFTP read
// requests asking for timeout=255.
func startFlood(ctx context.Context, s *testkit.Server, tftpAddr string) *flood {
	f := &flood{}
	c := clientFrom(floodSource, 16)
	// The flooder does not care whom it talks to.
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	targets := []struct{ method, url string }{{"GET", s.URL + "/ipxe?mac=52-54-00-aa-00-01"}, {"POST", cmp.Or(s.HTTPSURL, s.URL) + "/enroll"}}
	for i := range 16 {
		f.wg.Go(func() {
			for j := 0; ctx.Err() == nil; j++ {
				tg := targets[(i+j)%2]
				hit(c, tg.method, tg.url)
				f.http.Add(1)
			}
		})
	}
	f.wg.Go(func() {
		raddr, err := net.ResolveUDPAddr("udp", tftpAddr)
		if err != nil {
			return
		}
		conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(floodSource)}, raddr)
		if err != nil {
			return
		}
		defer conn.Close()
		rrq := append([]byte{0, 1}, []byte("undionly.kpxe\x00octet\x00timeout\x00255\x00")...)
		for ctx.Err() == nil {
			conn.Write(rrq)
			f.tftp.Add(1)
		}
	})
	return f
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}
