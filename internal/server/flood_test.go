package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/ratelimit"
	"github.com/kilnhq/kiln/internal/store"
)

// serveFrom sends one request to h as if from the address src.
func serveFrom(h http.Handler, src, method, target, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.RemoteAddr = src + ":40000"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func auditEntries(t *testing.T, st store.Store) []audit.Entry {
	t.Helper()
	ctx := context.Background()
	var out []audit.Entry
	if err := st.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.ListAudit(ctx, 0, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFloodFromOneSourceIsRateLimited: one address hammering the unauthenticated
// boot script and enrollment endpoints is answered 429 with Retry-After once over its
// budget, counted in a metric, while another address is still served.
func TestFloodFromOneSourceIsRateLimited(t *testing.T) {
	s := newTestServer(t)
	h := s.http.Handler
	for _, c := range []struct{ method, target, body string }{
		{"GET", "/ipxe?mac=52-54-00-12-34-56&buildarch=x86_64", ""},
		{"POST", "/enroll", "junk"},
	} {
		limited := 0
		for range 500 {
			w := serveFrom(h, "10.66.0.1", c.method, c.target, c.body)
			if w.Code == http.StatusTooManyRequests {
				limited++
				if w.Header().Get("Retry-After") == "" {
					t.Fatalf("%s %s: 429 without Retry-After", c.method, c.target)
				}
			}
		}
		if limited == 0 {
			t.Errorf("%s %s: 500 requests from one address, none refused with 429", c.method, c.target)
		}
		if w := serveFrom(h, "10.66.0.2", c.method, c.target, c.body); w.Code == http.StatusTooManyRequests {
			t.Errorf("%s %s: another address is refused too (429)", c.method, c.target)
		}
	}
	if n := counterSum(t, s, "kiln_http_rate_limited_total"); n == 0 {
		t.Errorf("kiln_http_rate_limited_total is %v after a flood", n)
	}
}

// TestJunkEnrollRefusalsAggregated: refusals of junk enrollments from one address
// are not one audit row each (a flood would fill the database): at most one entry per
// source and reason per interval, with the count.
func TestJunkEnrollRefusalsAggregated(t *testing.T) {
	s := newTestServerWith(t, Config{RateLimits: map[string]ratelimit.Rate{RateEnroll: {}}})
	before := len(auditEntries(t, s.store))
	for range 200 {
		serveFrom(s.http.Handler, "10.66.0.1", "POST", "/enroll", "junk")
	}
	if added := len(auditEntries(t, s.store)) - before; added > 1 {
		t.Fatalf("200 junk enrollments from one address added %d audit entries", added)
	}
	// What is pending is written when the server stops.
	s.enroll.FlushRefusals(context.Background())
	all := auditEntries(t, s.store)
	if added := len(all) - before; added != 2 {
		t.Fatalf("after the flush, %d audit entries for 200 refusals; want 2 (the first, then the count)", added)
	}
	last := all[len(all)-1]
	if last.Action != "enroll-refused" || !strings.HasPrefix(last.Summary, "x 199 from 10.66.0.1 in ") {
		t.Fatalf("aggregated entry: %s %q", last.Action, last.Summary)
	}
}

// counterSum adds up a counter's series in the server's registry.
func counterSum(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
