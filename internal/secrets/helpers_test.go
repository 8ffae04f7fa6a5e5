package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/role"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// Values no test writes anywhere except through Set: the leak test greps for them.
const (
	dbPassword = "kiln-TEST-db-password-3f9a7c2e"
	apiToken   = "kiln-TEST-api-token-b71d04e8"
)

var admin = inventory.Actor{ID: "token:admin", Role: store.RoleAdmin}

// lockedBuffer collects logs from concurrent handlers.
type lockedBuffer = testkit.LogBuffer

// clock is a settable clock.
type clock struct{ t atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.t.Store(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time            { return time.Unix(0, c.t.Load()).UTC() }
func (c *clock) Advance(d time.Duration)   { c.t.Add(int64(d)) }
func (c *clock) Set(t time.Time)           { c.t.Store(t.UnixNano()) }
func (c *clock) Since(t time.Time) float64 { return c.Now().Sub(t).Seconds() }

// env is a Kiln with an SQLite store in a temporary data directory.
type env struct {
	t       *testing.T
	dir     string
	store   store.Store
	inv     *inventory.Service
	svc     *Service
	srv     *Server
	logs    *lockedBuffer
	clock   *clock
	http    *httptest.Server
	mux     *http.ServeMux
	kekPath string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	st := testkit.OpenSQLite(t, dir)
	e := &env{t: t, dir: dir, store: st, logs: &lockedBuffer{}, clock: newClock(), kekPath: filepath.Join(dir, KEKFileName)}
	e.start()
	t.Cleanup(func() {
		if e.http != nil {
			e.http.Close()
		}
		e.store.Close()
	})
	return e
}

// start builds the services on e.store (again, after a restart).
func (e *env) start() {
	e.t.Helper()
	keys, err := LoadKeyRing(e.kekPath)
	if err != nil {
		e.t.Fatalf("load keys: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.inv = &inventory.Service{Store: e.store, Now: e.clock.Now}
	e.svc = &Service{Store: e.store, Keys: keys, Logger: logger, Now: e.clock.Now}
	if err := e.svc.Reconcile(context.Background()); err != nil {
		e.t.Fatalf("reconcile: %v", err)
	}
	e.srv = &Server{Service: e.svc, Logger: logger, Identity: headerIdentity,
		Actor: func(r *http.Request) inventory.Actor {
			return inventory.Actor{ID: r.Header.Get("X-Test-Actor"), Role: r.Header.Get("X-Test-Role")}
		}}
	e.mux = http.NewServeMux()
	e.srv.RegisterPublic(e.mux)
	e.srv.RegisterAgent(e.mux, nil)
	e.srv.RegisterOperator(testRegister(e.mux))
	if e.http != nil {
		e.http.Config.Handler = e.mux
	} else {
		// TLS: handles are redeemed over HTTPS only (a plain HTTP request burns one).
		e.http = httptest.NewTLSServer(e.mux)
	}
	e.svc.PublicURL = e.http.URL
}

// restart closes the store and opens it again, with new services: what a restart of
// kiln serve does.
func (e *env) restart() {
	e.t.Helper()
	if err := e.store.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.store = testkit.OpenSQLite(e.t, e.dir)
	e.start()
}

// headerIdentity is the fake mTLS identity: the machine named in X-Test-Machine.
func headerIdentity(r *http.Request) (string, bool) {
	m := r.Header.Get("X-Test-Machine")
	return m, m != ""
}

// testRegister stands in for the API's route table: the role comes from X-Test-Role.
func testRegister(mux *http.ServeMux) func(method, path, role, summary string, h http.HandlerFunc) {
	return func(method, path, need, summary string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+path, func(w http.ResponseWriter, r *http.Request) {
			if !role.Allows(r.Header.Get("X-Test-Role"), need) {
				writeError(w, http.StatusForbidden, "role "+r.Header.Get("X-Test-Role")+" may not do this (needs "+need+")")
				return
			}
			h(w, r)
		})
	}
}

// apply applies YAML manifests through the inventory, as `kiln apply` does.
func (e *env) apply(manifests string) {
	e.t.Helper()
	objs, err := resource.ParseManifests(strings.NewReader(manifests), "test")
	if err != nil {
		e.t.Fatalf("parse manifests: %v", err)
	}
	if _, err := e.inv.Apply(context.Background(), admin, objs); err != nil {
		e.t.Fatalf("apply: %v", err)
	}
}

func (e *env) set(name, value string) *VersionInfo {
	e.t.Helper()
	vi, err := e.svc.Set(context.Background(), admin, name, []byte(value))
	if err != nil {
		e.t.Fatalf("set %s: %v", name, err)
	}
	return vi
}

// setLabels replaces a machine's labels as an operator would (kiln apply).
func (e *env) setLabels(machine string, labels map[string]string) {
	e.t.Helper()
	obj, err := e.inv.Get(context.Background(), "Machine", machine)
	if err != nil {
		e.t.Fatal(err)
	}
	obj.Metadata.Labels = labels
	if _, err := e.inv.Update(context.Background(), admin, obj); err != nil {
		e.t.Fatal(err)
	}
}

// setFacts stores facts as the agent's report does (status.facts).
func (e *env) setFacts(machine string, facts map[string]any) {
	e.t.Helper()
	err := e.store.Update(context.Background(), func(tx store.Tx) error {
		m, err := tx.Get(context.Background(), "Machine", machine)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(map[string]any{"state": "provisioning", "facts": facts})
		m.Status = b
		return tx.Update(context.Background(), m)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) auditEntries() []audit.Entry {
	e.t.Helper()
	out := testkit.AuditLog(e.t, e.store)
	var v audit.Verifier
	for i := range out {
		if err := v.Next(&out[i]); err != nil {
			e.t.Fatalf("audit chain: %v", err)
		}
	}
	return out
}

func (e *env) events(machine string) []store.Event {
	e.t.Helper()
	evs, err := e.inv.Events(context.Background(), machine, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func countAudit(entries []audit.Entry, action, contains string) int {
	n := 0
	for _, a := range entries {
		if a.Action == action && strings.Contains(a.Summary, contains) {
			n++
		}
	}
	return n
}

func countEvents(evs []store.Event, typ string) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// request sends a request to the test server with the given test headers.
func (e *env) request(method, path string, body io.Reader, headers map[string]string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func asMachine(m string) map[string]string { return map[string]string{"X-Test-Machine": m} }
func asRole(role string) map[string]string {
	return map[string]string{"X-Test-Role": role, "X-Test-Actor": "token:" + role}
}

func wantErrIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

// The fleet most tests use: two machines on one profile, two secrets.
const (
	ignitionTemplate = `{
  "ignition": {"version": "3.3.0"},
  "storage": {"files": [
    {"path": "/etc/db-password", "mode": 384, "contents": {"source": {{ secret "db-password" | dataURL | toJson }}}},
    {"path": "/etc/hostname", "mode": 420, "contents": {"source": {{ printf "data:,%s" .Machine.Name | toJson }}}},
    {"path": "/etc/kiln/api-token", "mode": 384, "contents": {"source": {{ secretURL "api-token" | toJson }}}}
  ]}
}`
	userDataTemplate = `#cloud-config
hostname: {{ .Machine.Hostname | default .Machine.Name }}
users:
  - name: core
    lock_passwd: true
write_files:
  - path: /etc/db-password
    permissions: '0600'
    content: {{ secret "db-password" | toJson }}
  - path: /etc/kiln/api-token-url
    content: {{ secretURL "api-token" | toJson }}
`
)

func fleet(ignition, userData string) string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	return `
kind: Artifact
metadata: {name: vmlinuz}
spec: {source: /srv/vmlinuz}
---
kind: Secret
metadata: {name: db-password}
spec:
  description: the database password
  machines: [web-1]
---
kind: Secret
metadata: {name: api-token}
spec:
  labels: {role: web}
---
kind: Profile
metadata: {name: web}
spec:
  boot: {kernel: vmlinuz}
  secrets: [db-password, api-token]
  configs:
    ignition: ` + q(ignition) + `
    cloudInit:
      user-data: ` + q(userData) + `
      network-config: "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"
    files:
      ks.cfg: "text\nrootpw --iscrypted {{ secret \"db-password\" | b64enc }}\n"
---
kind: Profile
metadata:
  name: public
  labels: {kiln.dev/public-configs: "true"}
spec:
  boot: {kernel: vmlinuz}
  secrets: [db-password]
  configs:
    ignition: '{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/etc/motd", "contents": {"source": "data:,{{ .Machine.Name }}"}}]}}'
    files:
      leaky.cfg: 'pw={{ secret "db-password" }}'
---
kind: Machine
metadata:
  name: web-1
  labels: {role: web}
spec:
  profile: web
  interfaces: [{mac: "52:54:00:00:00:01", ip: 10.0.0.11, hostname: web-1}]
---
kind: Machine
metadata: {name: web-2}
spec:
  profile: web
  interfaces: [{mac: "52:54:00:00:00:02"}]
---
kind: Machine
metadata: {name: pub-1}
spec:
  profile: public
  interfaces: [{mac: "52:54:00:00:00:03"}]
`
}

// newFleet is an env with the fleet applied and both secrets set.
func newFleet(t *testing.T) *env {
	e := newEnv(t)
	e.apply(fleet(ignitionTemplate, userDataTemplate))
	e.set("db-password", dbPassword)
	e.set("api-token", apiToken)
	return e
}
