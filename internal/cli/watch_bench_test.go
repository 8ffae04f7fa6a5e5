package cli_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/watch"
)

// rssKiB reads a process's resident set size.
func rssKiB(b *testing.B, pid int) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// BenchmarkWatchers1000 holds 1,000 SSE clients on one `kiln serve` (SQLite) and
// measures the server's memory per watcher (RSS after the clients connected
// minus before, over 1,000) and the latency from the start of a write (an apply
// through the API) to its MODIFIED message at each client: p50 and p99 over
// 1,000 clients x 20 writes, 100 ms apart. make bench-watch runs it.
func BenchmarkWatchers1000(b *testing.B) {
	const clients, writes = 1000, 20
	s := testkit.Serve(b, testkit.ServeOptions{Args: []string{"--watches-per-token", "2000"}})
	apply := func(rack int) {
		body := fmt.Sprintf(`{"objects":[{"kind":"Machine","metadata":{"name":"bench-1","labels":{"n":"%d"}},"spec":{"interfaces":[{"mac":"52:54:00:aa:00:01"}]}}]}`, rack)
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/api/v1/apply", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("apply: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	apply(writes) // outside the measured writes' numbers
	for range b.N {
		time.Sleep(time.Second) // let the server settle (GC) before the baseline
		before := rssKiB(b, s.PID())
		ctx, cancel := context.WithCancel(context.Background())
		tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: clients}
		hc := &http.Client{Transport: tr}
		type sample struct {
			n  int
			at time.Time
		}
		samples := make(chan sample, clients*writes)
		var ready, done sync.WaitGroup
		for range clients {
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/v1/machines?watch=1", nil)
				req.Header.Set("Authorization", "Bearer "+s.AdminToken)
				resp, err := hc.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Errorf("watch: %v %v", err, resp)
					ready.Done()
					return
				}
				defer resp.Body.Close()
				d := watch.NewDecoder(bufio.NewReader(resp.Body))
				if _, err := d.Next(); err != nil { // the snapshot: bench-1 ADDED
					b.Errorf("snapshot: %v", err)
					ready.Done()
					return
				}
				ready.Done()
				for {
					m, err := d.Next()
					if err != nil {
						return
					}
					at := time.Now()
					i := strings.Index(m.Data, `"n":"`)
					n, _ := strconv.Atoi(strings.SplitN(m.Data[i+5:], `"`, 2)[0])
					samples <- sample{n, at}
				}
			}()
		}
		ready.Wait()
		time.Sleep(time.Second)
		after := rssKiB(b, s.PID())
		starts := make([]time.Time, writes)
		for n := range writes {
			starts[n] = time.Now()
			apply(n)
			time.Sleep(100 * time.Millisecond)
		}
		var lat []time.Duration
		timeout := time.After(30 * time.Second)
	collect:
		for len(lat) < clients*writes {
			select {
			case sm := <-samples:
				if sm.n >= 0 && sm.n < writes {
					lat = append(lat, sm.at.Sub(starts[sm.n]))
				}
			case <-timeout:
				break collect
			}
		}
		cancel()
		done.Wait()
		tr.CloseIdleConnections()
		slices.Sort(lat)
		if len(lat) < clients*writes {
			b.Errorf("received %d of %d messages", len(lat), clients*writes)
		}
		if len(lat) == 0 {
			return
		}
		pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
		b.ReportMetric(float64(after-before)/clients, "KiB-RSS/watcher")
		b.ReportMetric(pct(0.50), "ms-p50")
		b.ReportMetric(pct(0.99), "ms-p99")
		b.ReportMetric(float64(len(lat)), "messages")
	}
}
