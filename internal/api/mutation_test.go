package api_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/inventory"
)

// TestQueryParameterBounds: every integer query parameter takes its bounds
// inclusive and refuses one past them with 400; a page limit returns that many.
func TestQueryParameterBounds(t *testing.T) {
	e := newEnv(t)
	for i, name := range []string{"web-1", "web-2", "web-3"} {
		if code, out := e.call("operator", "POST", "/api/v1/machines", machine(name, fmt.Sprintf("52:54:00:00:00:0%d", i+1))); code != 201 {
			t.Fatalf("create %s: %d %v", name, code, out)
		}
	}
	cases := []struct {
		path  string
		want  int
		items int // -1: not checked
	}{
		{"/api/v1/machines?limit=-1", 400, -1},
		{"/api/v1/machines?limit=0", 200, 3}, // 0: no limit
		{"/api/v1/machines?limit=2", 200, 2},
		{"/api/v1/machines?limit=100000", 200, 3},
		{"/api/v1/machines?limit=100001", 400, -1},
		{"/api/v1/machines?limit=x", 400, -1},
		{"/api/v1/audit?limit=0", 400, -1},
		{"/api/v1/audit?limit=1", 200, 1},
		{"/api/v1/audit?limit=100000", 200, 3},
		{"/api/v1/audit?limit=100001", 400, -1},
		{"/api/v1/audit?after=-1", 400, -1},
		{"/api/v1/audit?after=0", 200, 3},
		{"/api/v1/audit?after=2", 200, 1},
		{"/api/v1/audit?after=3", 200, 0},
		{"/api/v1/machines/web-1/events?limit=0", 400, -1},
		{"/api/v1/machines/web-1/events?limit=1", 200, 1},
		{"/api/v1/machines/web-1/events?limit=10000", 200, 1},
		{"/api/v1/machines/web-1/events?limit=10001", 400, -1},
		{"/api/v1/machines/nope/events", 404, -1},
	}
	for _, c := range cases {
		code, out := e.call("viewer", "GET", c.path, nil)
		if code != c.want {
			t.Errorf("GET %s: %d %v, want %d", c.path, code, out, c.want)
			continue
		}
		if c.items >= 0 {
			items, _ := out["items"].([]any)
			if len(items) != c.items {
				t.Errorf("GET %s: %d items, want %d", c.path, len(items), c.items)
			}
		}
	}
}

// TestDefaultBodyLimit: a Server whose MaxBodyBytes is not set takes bodies up to
// DefaultMaxBodyBytes and refuses larger ones with 413.
func TestDefaultBodyLimit(t *testing.T) {
	e := newEnv(t)
	srv := &api.Server{Inventory: &inventory.Service{Store: e.store}, Store: e.store}
	mux := http.NewServeMux()
	srv.Register(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	e.srv = hs
	if code, out := e.call("operator", "POST", "/api/v1/machines", machine("web-1", "52:54:00:00:00:01")); code != 201 {
		t.Errorf("small body: %d %v, want 201", code, out)
	}
	big := `{"kind":"Machine","metadata":{"name":"web-2"},"spec":{"pad":"` + strings.Repeat("x", api.DefaultMaxBodyBytes) + `"}}`
	if code, out := e.call("operator", "POST", "/api/v1/machines", big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("body over DefaultMaxBodyBytes: %d %v, want 413", code, out)
	}
}

// TestWhoAmI: the calling token's role, and no secret of it.
func TestWhoAmI(t *testing.T) {
	e := newEnv(t)
	for _, role := range []string{"viewer", "operator", "admin"} {
		code, out := e.call(role, "GET", "/api/v1/whoami", nil)
		if code != 200 || out["role"] != role {
			t.Errorf("whoami as %s: %d %v", role, code, out)
		}
		if strings.Contains(fmt.Sprint(out), e.tokens[role]) {
			t.Errorf("whoami as %s shows the token", role)
		}
	}
}
