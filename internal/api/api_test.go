package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

type env struct {
	t      *testing.T
	srv    *httptest.Server
	store  store.Store
	api    *api.Server
	mux    *http.ServeMux
	tokens map[string]string // role -> token
}

func newEnv(t *testing.T) *env {
	t.Helper()
	kit := testkit.NewStore(t)
	st := kit.Store
	e := &env{t: t, store: st, tokens: map[string]string{}}
	for _, role := range []string{store.RoleAdmin, store.RoleOperator, store.RoleViewer} {
		e.tokens[role] = testkit.APIToken(t, st, role, role+"-test")
	}
	e.api = &api.Server{Inventory: kit.Inv, Store: st, MaxBodyBytes: 1 << 20, Version: "test"}
	e.mux = http.NewServeMux()
	e.api.Register(e.mux)
	e.srv = httptest.NewServer(e.mux)
	t.Cleanup(e.srv.Close)
	return e
}

// call sends a request and returns the status code and the decoded body.
func (e *env) call(role, method, path string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	switch role {
	case "":
	case "bogus":
		req.Header.Set("Authorization", "Bearer kiln_000000000000_"+strings.Repeat("0", 64))
	default:
		tok := e.tokens[role]
		if tok == "" {
			tok = role // a raw token
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &out)
	if out == nil {
		out = map[string]any{"raw": string(data)}
	}
	return resp.StatusCode, out
}

func machine(name, mac string) map[string]any {
	return map[string]any{
		"kind":     "Machine",
		"metadata": map[string]any{"name": name, "labels": map[string]any{"role": "web"}},
		"spec":     map[string]any{"interfaces": []any{map[string]any{"mac": mac}}},
	}
}

// count returns how many objects of a plural kind are stored and audit entries exist.
func (e *env) count(plural string) (objects, audit int) {
	_, l := e.call("admin", "GET", "/api/v1/"+plural, nil)
	_, a := e.call("admin", "GET", "/api/v1/audit", nil)
	return len(l["items"].([]any)), len(a["items"].([]any))
}

func TestCRUDAndOptimisticConcurrency(t *testing.T) {
	e := newEnv(t)
	code, out := e.call("operator", "POST", "/api/v1/machines", machine("web-1", "52:54:00:00:00:01"))
	if code != 201 {
		t.Fatalf("create: %d %v", code, out)
	}
	md := out["metadata"].(map[string]any)
	if md["resourceVersion"] != "1" {
		t.Fatalf("resourceVersion %v, want 1", md["resourceVersion"])
	}
	if code, _ := e.call("operator", "POST", "/api/v1/machines", machine("web-1", "52:54:00:00:00:09")); code != 409 {
		t.Fatalf("second create: %d, want 409", code)
	}
	m := machine("web-1", "52:54:00:00:00:02")
	m["metadata"].(map[string]any)["resourceVersion"] = "1"
	if code, out := e.call("operator", "PUT", "/api/v1/machines/web-1", m); code != 200 {
		t.Fatalf("update: %d %v", code, out)
	}
	// The same resourceVersion again is now stale.
	m["spec"] = map[string]any{"interfaces": []any{map[string]any{"mac": "52:54:00:00:00:03"}}}
	code, out = e.call("operator", "PUT", "/api/v1/machines/web-1", m)
	if code != 409 || !strings.Contains(out["error"].(string), "stale") {
		t.Fatalf("stale update: %d %v, want 409", code, out)
	}
	code, out = e.call("viewer", "GET", "/api/v1/lookup/mac/52-54-00-00-00-02", nil)
	if code != 200 || out["metadata"].(map[string]any)["name"] != "web-1" {
		t.Fatalf("lookup by mac: %d %v", code, out)
	}
	if code, _ := e.call("viewer", "GET", "/api/v1/lookup/mac/52:54:00:00:00:01", nil); code != 404 {
		t.Fatalf("old mac still found: %d", code)
	}
	code, out = e.call("viewer", "GET", "/api/v1/machines/web-1/events", nil)
	if code != 200 || len(out["items"].([]any)) != 2 {
		t.Fatalf("events: %d %v, want the create and the update", code, out)
	}
	if code, _ := e.call("operator", "DELETE", "/api/v1/machines/web-1?resourceVersion=1", nil); code != 409 {
		t.Fatalf("conditional delete with stale version: %d, want 409", code)
	}
	if code, _ := e.call("operator", "DELETE", "/api/v1/machines/web-1", nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := e.call("viewer", "GET", "/api/v1/machines/web-1", nil); code != 404 {
		t.Fatalf("get after delete: %d", code)
	}
}

func TestApplyIsAllOrNothing(t *testing.T) {
	e := newEnv(t)
	good1 := machine("web-1", "52:54:00:00:00:01")
	good2 := machine("web-2", "52:54:00:00:00:02")
	bad := machine("web-3", "zz:01")
	code, out := e.call("operator", "POST", "/api/v1/apply", map[string]any{"objects": []any{good1, bad, good2}})
	if code != 422 {
		t.Fatalf("apply with a bad document: %d %v", code, out)
	}
	if msg := out["error"].(string); !strings.Contains(msg, `objects[1]: machine "web-3": spec.interfaces[0].mac: "zz:01" is not a MAC address`) {
		t.Fatalf("error does not name the field: %q", msg)
	}
	// A refusal found only inside the transaction (a duplicate MAC) also writes nothing.
	dup := machine("web-3", "52:54:00:00:00:01")
	code, out = e.call("operator", "POST", "/api/v1/apply", map[string]any{"objects": []any{good1, good2, dup}})
	if code != 409 || !strings.Contains(out["error"].(string), `mac:52:54:00:00:00:01 is already claimed by Machine "web-1"`) {
		t.Fatalf("duplicate mac: %d %v", code, out)
	}
	// A reference to a missing profile, likewise.
	ref := machine("web-4", "52:54:00:00:00:04")
	ref["spec"].(map[string]any)["profile"] = "nope"
	code, out = e.call("operator", "POST", "/api/v1/apply", map[string]any{"objects": []any{good1, ref}})
	if code != 422 || !strings.Contains(out["error"].(string), `machine "web-4": spec.profile: profile "nope" does not exist`) {
		t.Fatalf("missing reference: %d %v", code, out)
	}
	if n, a := e.count("machines"); n != 0 || a != 0 {
		t.Fatalf("refused applies wrote %d machines and %d audit entries", n, a)
	}
	code, out = e.call("operator", "POST", "/api/v1/apply", map[string]any{"objects": []any{good1, good2}})
	if code != 200 {
		t.Fatalf("good apply: %d %v", code, out)
	}
	code, out = e.call("operator", "POST", "/api/v1/apply", map[string]any{"objects": []any{good1, good2}})
	for _, r := range out["results"].([]any) {
		if r.(map[string]any)["outcome"] != inventory.Unchanged {
			t.Fatalf("re-apply changed something: %v", out)
		}
	}
	if n, a := e.count("machines"); n != 2 || a != 2 {
		t.Fatalf("after apply + re-apply: %d machines, %d audit entries; want 2 and 2", n, a)
	}
}

func TestRoles(t *testing.T) {
	e := newEnv(t)
	m := machine("web-1", "52:54:00:00:00:01")
	cases := []struct {
		role, method, path string
		body               any
		want               int
	}{
		{"", "GET", "/api/v1/machines", nil, 401},
		{"bogus", "GET", "/api/v1/machines", nil, 401},
		{"not-a-token", "GET", "/api/v1/machines", nil, 401},
		{"viewer", "GET", "/api/v1/machines", nil, 200},
		{"viewer", "POST", "/api/v1/machines", m, 403},
		{"viewer", "POST", "/api/v1/apply", map[string]any{"objects": []any{m}}, 403},
		{"viewer", "GET", "/api/v1/apitokens", nil, 403},
		{"operator", "POST", "/api/v1/apitokens", map[string]any{"role": "admin"}, 403},
		{"operator", "POST", "/api/v1/machines", m, 201},
		{"viewer", "DELETE", "/api/v1/machines/web-1", nil, 403},
		{"", "GET", "/api/v1/openapi.json", nil, 200},
	}
	for _, c := range cases {
		if code, out := e.call(c.role, c.method, c.path, c.body); code != c.want {
			t.Errorf("%s %s as %q: %d %v, want %d", c.method, c.path, c.role, code, out, c.want)
		}
	}
	// A created token works until it is revoked.
	code, out := e.call("admin", "POST", "/api/v1/apitokens", map[string]any{"role": "viewer", "name": "ci"})
	if code != 201 {
		t.Fatalf("create token: %d %v", code, out)
	}
	tok, id := out["token"].(string), out["id"].(string)
	if code, _ := e.call(tok, "GET", "/api/v1/machines", nil); code != 200 {
		t.Fatalf("new token: %d", code)
	}
	_, list := e.call("admin", "GET", "/api/v1/apitokens", nil)
	if raw, _ := json.Marshal(list); strings.Contains(string(raw), tok) || strings.Contains(string(raw), "hash") {
		t.Fatalf("token listing leaks the token or its hash: %s", raw)
	}
	if code, _ := e.call("admin", "DELETE", "/api/v1/apitokens/"+id, nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	if code, _ := e.call(tok, "GET", "/api/v1/machines", nil); code != 401 {
		t.Fatalf("revoked token: %d, want 401", code)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	big := `{"kind":"Machine","metadata":{"name":"big","labels":{"x":"` + strings.Repeat("a", 2<<20) + `"}}}`
	cases := []struct {
		name, method, path string
		body               string
		want               int
		msg                string
	}{
		{"malformed", "POST", "/api/v1/machines", `{"kind": "Machine", `, 400, "malformed JSON"},
		{"trailing", "POST", "/api/v1/machines", `{"kind":"Machine","metadata":{"name":"a"}} {}`, 400, "malformed JSON"},
		{"too large", "POST", "/api/v1/machines", big, 413, "larger than 1048576 bytes"},
		{"too large apply", "POST", "/api/v1/apply", `{"objects":[` + big + `]}`, 413, "larger than"},
		{"unknown field", "POST", "/api/v1/machines", `{"kind":"Machine","metadata":{"name":"a"},"spec":{"nics":[]}}`, 422, "spec.nics: unknown field"},
		{"wrong type", "POST", "/api/v1/machines", `{"kind":"Machine","metadata":{"name":"a"},"spec":{"interfaces":"eth0"}}`, 422, "spec.interfaces: expected a list"},
		{"wrong kind for path", "POST", "/api/v1/machines", `{"kind":"Profile","metadata":{"name":"a"},"spec":{"boot":{"agent":true}}}`, 422, "does not belong under /api/v1/machines"},
		{"unknown kind path", "GET", "/api/v1/servers", "", 404, "no resource"},
		{"name mismatch", "PUT", "/api/v1/machines/b", `{"kind":"Machine","metadata":{"name":"a"}}`, 422, "does not match"},
		{"apply unknown field", "POST", "/api/v1/apply", `{"objects":[],"force":true}`, 400, "unknown field"},
		{"apply empty", "POST", "/api/v1/apply", `{"objects":[]}`, 422, "at least one"},
		{"bad selector", "GET", "/api/v1/machines?labelSelector=a%20in%20b", "", 400, "label selector"},
		{"bad limit", "GET", "/api/v1/machines?limit=-1", "", 400, "limit"},
		{"bad role", "POST", "/api/v1/apitokens", `{"role":"root"}`, 422, "role"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := e.call("admin", c.method, c.path, c.body)
			if code != c.want {
				t.Fatalf("status %d %v, want %d", code, out, c.want)
			}
			if msg, _ := out["error"].(string); !strings.Contains(msg, c.msg) {
				t.Fatalf("error %q does not contain %q", msg, c.msg)
			}
		})
	}
	if n, a := e.count("machines"); n != 0 || a != 0 {
		t.Fatalf("bad input stored %d machines, %d audit entries", n, a)
	}
}

func TestPaginationAndSelector(t *testing.T) {
	e := newEnv(t)
	var objs []any
	for i := 0; i < 25; i++ {
		m := machine(fmt.Sprintf("m-%02d", i), fmt.Sprintf("52:54:00:00:01:%02x", i))
		if i%2 == 0 {
			m["metadata"].(map[string]any)["labels"] = map[string]any{"role": "db"}
		}
		objs = append(objs, m)
	}
	if code, out := e.call("operator", "POST", "/api/v1/apply", map[string]any{"objects": objs}); code != 200 {
		t.Fatalf("apply: %d %v", code, out)
	}
	var names []string
	cont := ""
	for pages := 0; pages < 10; pages++ {
		_, out := e.call("viewer", "GET", "/api/v1/machines?labelSelector=role%3Ddb&limit=5&continue="+cont, nil)
		for _, it := range out["items"].([]any) {
			names = append(names, it.(map[string]any)["metadata"].(map[string]any)["name"].(string))
		}
		c, _ := out["continue"].(string)
		if c == "" {
			break
		}
		cont = c
	}
	if len(names) != 13 || names[0] != "m-00" || names[12] != "m-24" {
		t.Fatalf("paged selector list: %v", names)
	}
}

func TestDeleteRefusedWhileReferenced(t *testing.T) {
	e := newEnv(t)
	prof := map[string]any{"kind": "Profile", "metadata": map[string]any{"name": "p"}, "spec": map[string]any{"boot": map[string]any{"agent": true}}}
	m := machine("web-1", "52:54:00:00:00:01")
	m["spec"].(map[string]any)["profile"] = "p"
	if code, out := e.call("operator", "POST", "/api/v1/apply", map[string]any{"objects": []any{m, prof}}); code != 200 {
		t.Fatalf("apply (machine listed before its profile): %d %v", code, out)
	}
	code, out := e.call("operator", "DELETE", "/api/v1/profiles/p", nil)
	if code != 422 || !strings.Contains(out["error"].(string), `machine "web-1" still refers to it (spec.profile)`) {
		t.Fatalf("delete referenced profile: %d %v", code, out)
	}
}

func TestAuditChainAndSummaries(t *testing.T) {
	e := newEnv(t)
	m := machine("web-1", "52:54:00:00:00:01")
	e.call("operator", "POST", "/api/v1/machines", m)
	m["spec"] = map[string]any{"interfaces": []any{map[string]any{"mac": "52:54:00:00:00:01", "ip": "10.0.0.5"}}}
	e.call("operator", "PUT", "/api/v1/machines/web-1", m)
	_, out := e.call("viewer", "GET", "/api/v1/audit", nil)
	items := out["items"].([]any)
	if len(items) != 2 {
		t.Fatalf("audit entries: %v", items)
	}
	upd := items[1].(map[string]any)
	if upd["summary"] != "changed: spec.interfaces[0].ip" || upd["action"] != "update" || !strings.HasPrefix(upd["actor"].(string), "token:") {
		t.Fatalf("update entry: %v", upd)
	}
	if strings.Contains(fmt.Sprint(items), "10.0.0.5") {
		t.Fatalf("audit summary carries a value: %v", items)
	}
	code, v := e.call("viewer", "GET", "/api/v1/audit/verify", nil)
	if code != 200 || v["ok"] != true || v["entries"].(float64) != 2 {
		t.Fatalf("verify: %d %v", code, v)
	}
}
