package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/apitoken"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// newTestServer assembles the production server (every service the way `kiln
// serve` mounts it) on a temporary data directory and loopback.
func newTestServer(t *testing.T) *Server {
	t.Helper()
	return newTestServerWith(t, Config{})
}

// newTestServerWith is newTestServer with more configuration.
func newTestServerWith(t *testing.T, cfg Config) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg.DataDir, cfg.Listen, cfg.Version = t.TempDir(), "127.0.0.1:0", "test"
	s, err := New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		s.listener.Close()
		s.store.Close()
	})
	return s
}

// roleTokens creates one API token per role and returns them by role.
func roleTokens(t *testing.T, st store.Store) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, role := range []string{store.RoleViewer, store.RoleOperator, store.RoleAdmin} {
		tok, rec, err := apitoken.New(role, role+"-routes", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Update(ctx, func(tx store.Tx) error { return tx.CreateAPIToken(ctx, rec) }); err != nil {
			t.Fatal(err)
		}
		out[role] = tok
	}
	return out
}

// operatorRouteRoles is what each operator API route allows: the least role that may
// call it ("" for no authentication). A route the server serves that is missing
// here fails TestEveryRouteEveryRole, so that no new route forgets its role.
var operatorRouteRoles = map[string]string{
	"GET /api/v1/openapi.json":                     "",
	"GET /api/v1/whoami":                           store.RoleViewer,
	"GET /api/v1/version":                          store.RoleViewer,
	"POST /api/v1/machines/{name}/cancel":          store.RoleOperator,
	"POST /api/v1/apply":                           store.RoleOperator,
	"GET /api/v1/{kind}":                           store.RoleViewer,
	"POST /api/v1/{kind}":                          store.RoleOperator,
	"GET /api/v1/{kind}/{name}":                    store.RoleViewer,
	"PUT /api/v1/{kind}/{name}":                    store.RoleOperator,
	"DELETE /api/v1/{kind}/{name}":                 store.RoleOperator,
	"GET /api/v1/machines/{name}/events":           store.RoleViewer,
	"GET /api/v1/events":                           store.RoleViewer,
	"GET /api/v1/webhooks/{name}/deliveries":       store.RoleViewer,
	"POST /api/v1/machines/{name}/reprovision":     store.RoleOperator,
	"POST /api/v1/machines/{name}/upgrade":         store.RoleOperator,
	"GET /api/v1/machines/{name}/workflow":         store.RoleViewer,
	"GET /api/v1/lookup/mac/{mac}":                 store.RoleViewer,
	"GET /api/v1/audit":                            store.RoleViewer,
	"GET /api/v1/audit/verify":                     store.RoleViewer,
	"GET /api/v1/apitokens":                        store.RoleAdmin,
	"POST /api/v1/apitokens":                       store.RoleAdmin,
	"DELETE /api/v1/apitokens/{id}":                store.RoleAdmin,
	"POST /api/v1/enroll/jointokens":               store.RoleOperator,
	"GET /api/v1/enroll/jointokens":                store.RoleViewer,
	"POST /api/v1/enroll/jointokens/{id}/revoke":   store.RoleOperator,
	"POST /api/v1/enroll/machines/{name}/revoke":   store.RoleOperator,
	"POST /api/v1/enroll/machines/{name}/bootcert": store.RoleAdmin,
	"GET /api/v1/enroll/ca":                        store.RoleViewer,
	"PUT /api/v1/secrets/{name}/value":             store.RoleOperator,
	"GET /api/v1/secrets/{name}/value":             store.RoleAdmin,
	"GET /api/v1/secrets/{name}/versions":          store.RoleViewer,
	"GET /api/v1/secrets/{name}/audit":             store.RoleViewer,
	"DELETE /api/v1/secrets/{name}":                store.RoleOperator,
	"POST /api/v1/secrets/rotate-key":              store.RoleAdmin,
	"GET /api/v1/render/{machine}":                 store.RoleOperator,
	"POST /api/v1/machines/{name}/power":           store.RoleOperator,
	"POST /api/v1/power":                           store.RoleOperator,
	"POST /api/v1/enrollments/{id}/approve":        store.RoleOperator,
	"POST /api/v1/enrollments/{id}/deny":           store.RoleOperator,
	"POST /api/v1/attestation/accept":              store.RoleAdmin,
}

// readOnlyKinds are written by Kiln only: every write through the API, DELETE
// included, is refused with 405 whatever the caller's role.
var readOnlyKinds = []string{"PowerJob", "Enrollment"}

var roleRankForTest = map[string]int{"": 0, store.RoleViewer: 1, store.RoleOperator: 2, store.RoleAdmin: 3}

// TestEveryRouteEveryRole walks every route of the operator API as production
// mounts it, for every kind where the path holds one, as every role and as no one:
// no token is 401, a role below the route's is 403, a role at or above it passes
// authorization; writes to read-only kinds are 405 for everyone allowed to write.
func TestEveryRouteEveryRole(t *testing.T) {
	s := newTestServer(t)
	tokens := roleTokens(t, s.store)
	h := s.http.Handler
	var ro []string
	for _, k := range resource.Kinds() {
		if k.ReadOnly {
			ro = append(ro, k.Name)
		}
	}
	if !slices.Equal(ro, readOnlyKinds) {
		t.Errorf("read-only kinds are %v, the table says %v", ro, readOnlyKinds)
	}
	served := s.operatorAPI.Patterns()
	for _, p := range served {
		if _, ok := operatorRouteRoles[p]; !ok {
			t.Errorf("route %q has no entry in operatorRouteRoles: decide which role it needs", p)
		}
	}
	for p := range operatorRouteRoles {
		if !slices.Contains(served, p) {
			t.Errorf("operatorRouteRoles has %q, which the server does not serve", p)
		}
	}
	fill := strings.NewReplacer("{name}", "no-such-object", "{id}", "nosuchid", "{mac}", "52:54:00:ff:ff:ff", "{machine}", "no-such-machine")
	for _, p := range served {
		method, path, _ := strings.Cut(p, " ")
		type target struct{ path, kind string }
		var targets []target
		if strings.Contains(path, "{kind}") {
			for _, k := range resource.Kinds() {
				targets = append(targets, target{fill.Replace(strings.ReplaceAll(path, "{kind}", k.Plural)), k.Name})
			}
		} else {
			targets = append(targets, target{fill.Replace(path), ""})
		}
		need := operatorRouteRoles[p]
		for _, tg := range targets {
			for _, role := range []string{"", store.RoleViewer, store.RoleOperator, store.RoleAdmin} {
				req := httptest.NewRequest(method, tg.path, strings.NewReader(""))
				if role != "" {
					req.Header.Set("Authorization", "Bearer "+tokens[role])
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				body, _ := io.ReadAll(rec.Body)
				got := rec.Code
				who := cmpOrNone(role)
				switch {
				case need != "" && role == "":
					if got != http.StatusUnauthorized {
						t.Errorf("%s %s as %s: %d, want 401 (%s)", method, tg.path, who, got, body)
					}
				case roleRankForTest[role] < roleRankForTest[need]:
					if got != http.StatusForbidden {
						t.Errorf("%s %s as %s: %d, want 403 (%s)", method, tg.path, who, got, body)
					}
				case method != http.MethodGet && slices.Contains(readOnlyKinds, tg.kind):
					if got != http.StatusMethodNotAllowed {
						t.Errorf("%s %s as %s: %d, want 405: %s are written by Kiln only (%s)", method, tg.path, who, got, tg.kind, body)
					}
				default:
					if got == http.StatusUnauthorized || got == http.StatusForbidden {
						t.Errorf("%s %s as %s: %d, want it authorized (%s)", method, tg.path, who, got, body)
					}
				}
			}
		}
	}
}

func cmpOrNone(role string) string {
	if role == "" {
		return "no token"
	}
	return role
}

// consoleRoutes are the web console's routes (outside the API's table: they are
// pages and the sign-in, open to anyone, each guarding itself): what an
// anonymous caller gets on a server without single sign-on.
var consoleRoutes = map[string]int{
	"GET /ui/":                  http.StatusOK,           // the page; it asks /ui/session who is there
	"GET /ui/assets/app.js":     http.StatusOK,           // static files
	"GET /ui/session":           http.StatusUnauthorized, // who is signed in, and how one may sign in
	"GET /ui/login":             http.StatusNotFound,     // to the provider; 404 without oidc
	"GET /ui/callback":          http.StatusNotFound,     // back from the provider
	"POST /ui/logout":           http.StatusOK,           // without a session: only clears the cookie
	"POST /ui/login/token":      http.StatusBadRequest,   // an API token, once, for a session
	"GET /ui/assets/index.html": http.StatusNotFound,
	"GET /ui/login/cli":         http.StatusNotFound, // kiln login's provider settings; 404 without oidc
	"POST /ui/login/cli":        http.StatusNotFound, // kiln login's ID token for a session token
}

// TestConsoleRoutesAnonymous walks the console's routes with no credentials:
// none of them reveals or changes anything.
func TestConsoleRoutesAnonymous(t *testing.T) {
	s := newTestServer(t)
	for p, want := range consoleRoutes {
		method, path, _ := strings.Cut(p, " ")
		rec := httptest.NewRecorder()
		s.http.Handler.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader("")))
		if rec.Code != want {
			t.Errorf("%s as no one: %d, want %d (%s)", p, rec.Code, want, rec.Body)
		}
	}
}
