package ratelimit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/ratelimit"
	"github.com/kilnhq/kiln/internal/testclock"
)

var (
	src1 = netip.MustParseAddr("10.0.0.1")
	src2 = netip.MustParseAddr("10.0.0.2")
)

func TestParseRate(t *testing.T) {
	cases := []struct {
		in   string
		want ratelimit.Rate
		err  bool
	}{
		{"5:30", ratelimit.Rate{PerSecond: 5, Burst: 30}, false},
		{"0.5:2", ratelimit.Rate{PerSecond: 0.5, Burst: 2}, false},
		{"20", ratelimit.Rate{PerSecond: 20, Burst: 20}, false},
		{"0.2", ratelimit.Rate{PerSecond: 0.2, Burst: 1}, false},
		{"off", ratelimit.Rate{}, false},
		{"0", ratelimit.Rate{}, false},
		{"x", ratelimit.Rate{}, true},
		{"5:0", ratelimit.Rate{}, true},
		{"-1:3", ratelimit.Rate{}, true},
		{"5:x", ratelimit.Rate{}, true},
	}
	for _, c := range cases {
		got, err := ratelimit.ParseRate(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v, error %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestBucketPerSource(t *testing.T) {
	clock := testclock.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	l := ratelimit.NewLimiter(ratelimit.Rate{PerSecond: 2, Burst: 3}, 0, clock.Now)
	for i := range 3 {
		if ok, _ := l.Allow(src1); !ok {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	ok, wait := l.Allow(src1)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("4th request at once: allowed %v, wait %v; want refused, 500ms", ok, wait)
	}
	if ok, _ := l.Allow(src2); !ok {
		t.Fatal("another source is refused: buckets are per source")
	}
	clock.Advance(499 * time.Millisecond)
	if ok, _ := l.Allow(src1); ok {
		t.Fatal("allowed before a token refilled")
	}
	clock.Advance(time.Millisecond)
	if ok, _ := l.Allow(src1); !ok {
		t.Fatal("refused after a token refilled")
	}
	// A long pause refills to the burst, not beyond.
	clock.Advance(time.Hour)
	allowed := 0
	for range 10 {
		if ok, _ := l.Allow(src1); ok {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("after an hour, %d requests at once allowed; want the burst, 3", allowed)
	}
}

func TestOffLimitsNothing(t *testing.T) {
	l := ratelimit.NewLimiter(ratelimit.Rate{}, 0, nil)
	for range 1000 {
		if ok, _ := l.Allow(src1); !ok {
			t.Fatal("an off limiter refused")
		}
	}
	if l.Len() != 0 {
		t.Fatalf("an off limiter remembers %d sources", l.Len())
	}
}

// TestMemoryBounded: a flood from a million distinct (spoofed) sources leaves the
// limiter at its cap, having forgotten the least recently seen.
func TestMemoryBounded(t *testing.T) {
	clock := testclock.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	l := ratelimit.NewLimiter(ratelimit.Rate{PerSecond: 1, Burst: 1}, 1000, clock.Now)
	l.Allow(src1) // src1 has used its token
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)})
		l.Allow(a)
		if i%500 == 0 {
			l.Allow(src2) // kept recent
		}
	}
	if n := l.Len(); n != 1000 {
		t.Fatalf("remembers %d sources; want the cap, 1000", n)
	}
	if ok, _ := l.Allow(src2); ok {
		t.Fatal("a recently seen source was forgotten (its empty bucket refilled)")
	}
	if ok, _ := l.Allow(src1); !ok {
		t.Fatal("the least recently seen source was not forgotten")
	}
}

func TestMiddleware(t *testing.T) {
	clock := testclock.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	var limited []string
	h := ratelimit.Middleware(ratelimit.Classes{
		Classify: func(r *http.Request) string {
			if r.URL.Path == "/ipxe" {
				return "scripts"
			}
			return ""
		},
		Limiters:  map[string]*ratelimit.Limiter{"scripts": ratelimit.NewLimiter(ratelimit.Rate{PerSecond: 0.25, Burst: 1}, 0, clock.Now)},
		OnLimited: func(class string, src netip.Addr) { limited = append(limited, class+" "+src.String()) },
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	get := func(path, remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", path, nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := get("/ipxe", "[::ffff:10.0.0.1]:1000"); w.Code != 200 {
		t.Fatalf("first request: %d", w.Code)
	}
	w := get("/ipxe", "10.0.0.1:2000") // the same source over IPv4 and IPv4-mapped IPv6
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "4" {
		t.Fatalf("second request: %d, Retry-After %q; want 429, 4", w.Code, w.Header().Get("Retry-After"))
	}
	for i := range 100 {
		if w := get("/other", "10.0.0.1:3000"); w.Code != 200 {
			t.Fatalf("unclassified request %d: %d", i, w.Code)
		}
	}
	if w := get("/ipxe", "10.0.0.2:1000"); w.Code != 200 {
		t.Fatalf("another source: %d", w.Code)
	}
	if fmt.Sprint(limited) != "[scripts 10.0.0.1]" {
		t.Fatalf("OnLimited calls: %v", limited)
	}
}
