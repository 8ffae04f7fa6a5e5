package secrets

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/api"
)

var handleURLRE = regexp.MustCompile(`https?://[^"\s]+/secret-handles/[A-Za-z0-9_-]{43}`)

// handleURL fetches web-1's ignition over the (fake) mTLS channel and returns the
// single-use URL in it.
func handleURL(t *testing.T, e *env) string {
	t.Helper()
	code, body := e.request("GET", "/config/ignition", nil, asMachine("web-1"))
	if code != 200 {
		t.Fatalf("ignition: %d %s", code, body)
	}
	u := handleURLRE.FindString(string(body))
	if u == "" {
		t.Fatalf("no handle URL in %s", body)
	}
	return strings.TrimPrefix(u, e.http.URL)
}

func TestHandleSingleUse(t *testing.T) {
	e := newFleet(t)
	path := handleURL(t, e)
	// Status before use: not used, nothing revealed.
	code, body := e.request("GET", path+"/status", nil, nil)
	var st HandleStatus
	if code != 200 || json.Unmarshal(body, &st) != nil || st.Used || st.Expired || st.Secret != "api-token" || st.Machine != "web-1" || st.Channel != "ignition" {
		t.Fatalf("status before use: %d %s", code, body)
	}
	if !st.ExpiresAt.Equal(e.clock.Now().Add(DefaultHandleTTL)) {
		t.Fatalf("expires at %v, want now + %v", st.ExpiresAt, DefaultHandleTTL)
	}
	// HEAD (which a GET route also matches) does not use it.
	if code, _ := e.request("HEAD", path, nil, nil); code != http.StatusMethodNotAllowed {
		t.Fatalf("HEAD: %d", code)
	}
	if code, _ := e.request("HEAD", "/config/secrets/db-password", nil, asMachine("web-1")); code != http.StatusMethodNotAllowed {
		t.Fatalf("HEAD of a secret: %d", code)
	}
	// First GET: the value.
	code, body = e.request("GET", path, nil, nil)
	if code != 200 || string(body) != apiToken {
		t.Fatalf("first GET: %d %q", code, body)
	}
	// Second GET: 410, an alert on the machine, an audit entry.
	e.clock.Advance(time.Second)
	code, body = e.request("GET", path, nil, nil)
	if code != http.StatusGone || strings.Contains(string(body), apiToken) {
		t.Fatalf("second GET: %d %s", code, body)
	}
	if evs := e.events("web-1"); countEvents(evs, "SecretHandleReused") != 1 || countEvents(evs, "SecretReleased") != 1 {
		t.Fatalf("events: %+v", evs)
	}
	entries := e.auditEntries()
	if countAudit(entries, "alert", "used again") != 1 || countAudit(entries, "release", "released secret api-token v1 to machine web-1 via handle") != 1 {
		t.Fatalf("audit: %+v", entries)
	}
	// Status after use: used, and when.
	code, body = e.request("GET", path+"/status", nil, nil)
	st = HandleStatus{}
	if code != 200 || json.Unmarshal(body, &st) != nil || !st.Used || st.UsedAt == nil || !st.UsedAt.Equal(e.clock.Now().Add(-time.Second)) {
		t.Fatalf("status after use: %d %s", code, body)
	}
}

func TestHandleExpires(t *testing.T) {
	e := newFleet(t)
	e.svc.HandleTTL = time.Minute
	path := handleURL(t, e)
	e.clock.Advance(time.Minute)
	code, _ := e.request("GET", path, nil, nil)
	if code != http.StatusGone {
		t.Fatalf("expired GET: %d", code)
	}
	code, body := e.request("GET", path+"/status", nil, nil)
	var st HandleStatus
	if code != 200 || json.Unmarshal(body, &st) != nil || st.Used || !st.Expired {
		t.Fatalf("status: %d %s", code, body)
	}
	if countAudit(e.auditEntries(), "handle-expired", "api-token") != 1 || countEvents(e.events("web-1"), "SecretHandleExpired") != 1 {
		t.Fatal("the expired request is not recorded")
	}
	// Long after expiry the handle is purged (by the next issue): 404.
	e.clock.Advance(DefaultHandleRetention + time.Hour)
	handleURL(t, e)
	if code, _ := e.request("GET", path, nil, nil); code != http.StatusNotFound {
		t.Fatalf("purged handle: %d", code)
	}
}

func TestHandleBadIDs(t *testing.T) {
	e := newFleet(t)
	valid := strings.Repeat("A", 43)
	for _, tc := range []struct {
		id   string
		code int
	}{
		{"short", 400},
		{strings.Repeat("A", 44), 400},
		{strings.Repeat("A", 42) + "!", 400},
		{strings.Repeat("A", 42) + "B", 400}, // trailing bits set: not what Kiln encodes
		{strings.Repeat("%2F", 10), 400},
		{valid, 404},
		{"MASKED-HANDLE-api-token", 400},
	} {
		for _, suffix := range []string{"", "/status"} {
			code, body := e.request("GET", "/secret-handles/"+tc.id+suffix, nil, nil)
			if code != tc.code {
				t.Errorf("GET %s%s: %d %s, want %d", tc.id, suffix, code, body, tc.code)
			}
		}
	}
	if n := len(e.auditEntries()); n == 0 {
		t.Fatal("setup wrote no audit")
	}
}

func TestHandleSurvivesRestart(t *testing.T) {
	e := newFleet(t)
	path := handleURL(t, e)
	e.restart()
	code, body := e.request("GET", path, nil, nil)
	if code != 200 || string(body) != apiToken {
		t.Fatalf("after restart: %d %q", code, body)
	}
	e.restart()
	if code, _ := e.request("GET", path, nil, nil); code != http.StatusGone {
		t.Fatalf("second use after another restart: %d", code)
	}
}

// concurrentGets fetches url from n goroutines at once and counts the answers.
func concurrentGets(t *testing.T, client *http.Client, urls []string) map[int]int {
	t.Helper()
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Get(u)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return codes
}

func TestHandleConcurrentGets(t *testing.T) {
	e := newFleet(t)
	for range 5 {
		path := handleURL(t, e)
		codes := concurrentGets(t, e.http.Client(), []string{e.http.URL + path, e.http.URL + path})
		if codes[200] != 1 || codes[410] != 1 {
			t.Fatalf("two concurrent GETs: %v, want one 200 and one 410", codes)
		}
	}
}

func TestAgentRoutes(t *testing.T) {
	e := newFleet(t)
	for _, tc := range []struct {
		path, machine string
		code          int
		want          string
	}{
		{"/config/ignition", "web-1", 200, `"version": "3.3.0"`},
		{"/config/cloud-init/user-data", "web-1", 200, "#cloud-config"},
		{"/config/cloud-init/meta-data", "web-1", 200, "instance-id: kiln-web-1"},
		{"/config/cloud-init/bogus", "web-1", 404, "not one of"},
		{"/config/files/ks.cfg", "web-1", 200, "rootpw"},
		{"/config/files/..%2Fetc", "web-1", 404, "not valid"},
		{"/config/secrets/db-password", "web-1", 200, dbPassword},
		{"/config/secrets/nope", "web-1", 404, `secret \"nope\" does not exist`},
		{"/config/ignition", "", 401, "certificate"},
		{"/config/ignition", "web-2", 403, `secret \"db-password\" may not be released to machine \"web-2\"`},
		{"/config/secrets/db-password", "web-2", 403, "may not be released"},
		{"/config/ignition?machine=web-2", "web-1", 403, `machine \"web-1\" may not read`},
		{"/config/ignition?machine=web-1", "web-1", 200, "storage"},
		{"/config/ignition", "ghost", 404, `machine \"ghost\" does not exist`},
	} {
		h := asMachine(tc.machine)
		if tc.machine == "" {
			h = nil
		}
		code, body := e.request("GET", tc.path, nil, h)
		if code != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %s as %q: %d %s; want %d with %q", tc.path, tc.machine, code, body, tc.code, tc.want)
		}
	}
	entries := e.auditEntries()
	if countAudit(entries, "deny", "machine web-1 (client certificate) asked for the ignition config of machine web-2") != 1 {
		t.Fatalf("the cross-machine request is not audited: %+v", entries)
	}
	if countEvents(e.events("web-2"), "AccessDenied") != 1 {
		t.Fatal("no event on the machine asked about")
	}
}

func TestPublicRoutes(t *testing.T) {
	e := newFleet(t)
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/config/by-mac/52-54-00-00-00-03/ignition", 200, "data:,pub-1"},
		{"/config/by-mac/52:54:00:00:00:03/ignition", 200, "data:,pub-1"},
		{"/config/by-mac/52-54-00-00-00-03/files/leaky.cfg", 403, "only served over mTLS"},
		{"/config/by-mac/52-54-00-00-00-01/ignition", 403, "only served over mTLS"},
		{"/config/by-mac/52-54-00-00-00-01/cloud-init/user-data", 403, "only served over mTLS"},
		{"/config/by-mac/52-54-00-00-00-99/ignition", 404, "no machine"},
		{"/config/by-mac/zz/ignition", 400, "not a MAC"},
	} {
		code, body := e.request("GET", tc.path, nil, nil)
		if code != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %s: %d %s; want %d with %q", tc.path, code, body, tc.code, tc.want)
		}
		if strings.Contains(string(body), dbPassword) {
			t.Fatalf("GET %s leaked the secret", tc.path)
		}
	}
	if n := countAudit(e.auditEntries(), "release", ""); n != 0 {
		t.Fatalf("%d releases over plain HTTP", n)
	}
}

func TestOperatorRoutes(t *testing.T) {
	e := newFleet(t)
	e.svc.MaxValueBytes = 64
	put := func(name, body, role string) (int, string) {
		code, b := e.request("PUT", "/api/v1/secrets/"+name+"/value", strings.NewReader(body), asRole(role))
		return code, string(b)
	}
	b64 := func(s string) string { return `{"value":"` + base64.StdEncoding.EncodeToString([]byte(s)) + `"}` }
	for _, tc := range []struct {
		name, secret, body, role string
		code                     int
		want                     string
	}{
		{"set", "fresh", b64("v-1"), "operator", 200, `"version":1`},
		{"viewer may not set", "fresh", b64("v-2"), "viewer", 403, "needs operator"},
		{"malformed JSON", "fresh", `{"value": nope-SECRETISH}`, "operator", 400, "malformed JSON"},
		{"unknown field", "fresh", `{"value":"", "x": 1}`, "operator", 400, "malformed JSON"},
		{"not base64", "fresh", `{"value":"%%%SECRETISH"}`, "operator", 400, "not standard base64"},
		{"empty", "fresh", `{"value":""}`, "operator", 422, "empty"},
		{"too large", "fresh", b64(strings.Repeat("S", 65)), "operator", 413, "limit of 64"},
		{"body too large", "fresh", b64(strings.Repeat("S", 4096)), "operator", 413, "limit of 64"},
		{"bad name", "Bad_Name", b64("v"), "operator", 422, "not valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := put(tc.secret, tc.body, tc.role)
			if code != tc.code || !strings.Contains(body, tc.want) || strings.Contains(body, "SECRETISH") || strings.Contains(body, "SSSS") {
				t.Fatalf("%d %s; want %d with %q", code, body, tc.code, tc.want)
			}
		})
	}
	// Reveal: admin only.
	if code, body := e.request("GET", "/api/v1/secrets/fresh/value", nil, asRole("operator")); code != 403 || strings.Contains(string(body), "v-1") {
		t.Fatalf("operator reveal: %d %s", code, body)
	}
	code, body := e.request("GET", "/api/v1/secrets/fresh/value", nil, asRole("admin"))
	var vr ValueResponse
	if code != 200 || json.Unmarshal(body, &vr) != nil || vr.Value != base64.StdEncoding.EncodeToString([]byte("v-1")) || vr.Version != 1 {
		t.Fatalf("admin reveal: %d %s", code, body)
	}
	if code, _ := e.request("GET", "/api/v1/secrets/fresh/value?version=x", nil, asRole("admin")); code != 400 {
		t.Fatalf("bad version: %d", code)
	}
	// Versions and audit: no values.
	code, body = e.request("GET", "/api/v1/secrets/db-password/versions", nil, asRole("viewer"))
	if code != 200 || !strings.Contains(string(body), `"version":1`) || strings.Contains(string(body), dbPassword) {
		t.Fatalf("versions: %d %s", code, body)
	}
	e.request("GET", "/config/ignition", nil, asMachine("web-1"))
	code, body = e.request("GET", "/api/v1/secrets/db-password/audit", nil, asRole("viewer"))
	var al AuditList
	if code != 200 || json.Unmarshal(body, &al) != nil || countAudit(al.Items, "release", "to machine web-1 via mtls") != 1 {
		t.Fatalf("audit of db-password: %d %s", code, body)
	}
	for _, a := range al.Items {
		if a.Kind != "Secret" || a.Name != "db-password" {
			t.Fatalf("audit of db-password lists %s/%s", a.Kind, a.Name)
		}
	}
	// Render preview: masked.
	code, body = e.request("GET", "/api/v1/render/web-1?kind=ignition", nil, asRole("operator"))
	var rr RenderResponse
	if code != 200 || json.Unmarshal(body, &rr) != nil || strings.Contains(string(body), dbPassword) || !strings.Contains(rr.Content, "MASKED") || len(rr.Releases) != 2 {
		t.Fatalf("render preview: %d %s", code, body)
	}
	code, body = e.request("GET", "/api/v1/render/web-1?kind=cloud-init", nil, asRole("operator"))
	if code != 200 || !strings.Contains(string(body), "MASKED-SECRET-db-password-v1") {
		t.Fatalf("render cloud-init: %d %s", code, body)
	}
	for q, want := range map[string]int{"kind=nope": 400, "kind=cloud-init&part=x": 400, "kind=file&part=none.cfg": 404} {
		if code, _ := e.request("GET", "/api/v1/render/web-1?"+q, nil, asRole("operator")); code != want {
			t.Errorf("render ?%s: %d, want %d", q, code, want)
		}
	}
	if code, _ := e.request("GET", "/api/v1/render/web-2?kind=ignition", nil, asRole("operator")); code != 403 {
		t.Fatalf("render for a denied machine: %d", code)
	}
	// Delete: refused while referenced, then done.
	if code, body := e.request("DELETE", "/api/v1/secrets/db-password", nil, asRole("operator")); code != 422 || !strings.Contains(string(body), "still refers to it") {
		t.Fatalf("delete referenced: %d %s", code, body)
	}
	if code, _ := e.request("DELETE", "/api/v1/secrets/fresh", nil, asRole("operator")); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	// Rotate: admin only.
	if code, _ := e.request("POST", "/api/v1/secrets/rotate-key", nil, asRole("operator")); code != 403 {
		t.Fatalf("operator rotate: %d", code)
	}
	code, body = e.request("POST", "/api/v1/secrets/rotate-key", nil, asRole("admin"))
	var rot RotationResult
	if code != 200 || json.Unmarshal(body, &rot) != nil || rot.Rewrapped != 2 {
		t.Fatalf("rotate: %d %s", code, body)
	}
}

// The routes fit beside the API's own on one mux (no pattern conflicts), and the more
// specific DELETE /api/v1/secrets/{name} wins over the generic delete.
func TestRoutesFitTheAPI(t *testing.T) {
	e := newFleet(t)
	mux := http.NewServeMux()
	a := &api.Server{Inventory: e.inv, Store: e.store}
	a.Register(mux)
	e.srv.RegisterOperator(func(method, path, role, summary string, h http.HandlerFunc) {
		if summary == "" || role == "" {
			t.Errorf("%s %s: no summary or role", method, path)
		}
		mux.HandleFunc(method+" "+path, h)
	})
	e.srv.RegisterPublic(mux)
	e.srv.RegisterAgent(mux, func(h http.Handler) http.Handler { return h })
	for _, tc := range []struct{ method, path, want string }{
		{"DELETE", "/api/v1/secrets/x", "DELETE /api/v1/secrets/{name}"},
		{"DELETE", "/api/v1/machines/x", "DELETE /api/v1/{kind}/{name}"},
		{"GET", "/api/v1/render/web-1", "GET /api/v1/render/{machine}"},
		{"GET", "/api/v1/secrets/x", "GET /api/v1/{kind}/{name}"},
	} {
		req, _ := http.NewRequest(tc.method, tc.path, nil)
		if _, pattern := mux.Handler(req); pattern != tc.want {
			t.Errorf("%s %s goes to %q, want %q", tc.method, tc.path, pattern, tc.want)
		}
	}
}
