package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
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

// TestApplyLimitsAndLog: an apply of exactly MaxDocuments objects gets past the
// count (and is refused here for its first object), one more is refused for the
// count; objects of a kind only Kiln writes are refused; the log line of an
// apply counts the objects it changed.
func TestApplyLimitsAndLog(t *testing.T) {
	e := newEnv(t)
	var logs bytes.Buffer
	e.api.Logger = slog.New(slog.NewTextHandler(&logs, nil))

	objects := func(n int) map[string]any {
		objs := make([]any, n)
		objs[0] = map[string]any{"kind": "Machine"} // no name: refused
		for i := 1; i < n; i++ {
			objs[i] = map[string]any{} // small: the body stays under the limit
		}
		return map[string]any{"objects": objs}
	}
	cases := []struct {
		name string
		body any
		want int
		text string
	}{
		{"MaxDocuments objects", objects(resource.MaxDocuments), 0, "objects[0]"},
		{"one more", objects(resource.MaxDocuments + 1), 422, fmt.Sprintf("more than %d objects", resource.MaxDocuments)},
		{"a PowerJob", map[string]any{"objects": []any{map[string]any{"kind": "PowerJob", "metadata": map[string]any{"name": "pj-1"}, "spec": map[string]any{"machine": "web-1", "op": "on"}}}},
			422, "written by Kiln only"},
	}
	for _, c := range cases {
		code, out := e.call("operator", "POST", "/api/v1/apply", c.body)
		msg, _ := out["error"].(string)
		if (c.want != 0 && code != c.want) || code < 400 || !strings.Contains(msg, c.text) {
			t.Errorf("%s: %d %q, want %d naming %q", c.name, code, msg, c.want, c.text)
		}
	}

	apply := map[string]any{"objects": []any{machine("web-1", "52:54:00:00:00:01"), machine("web-2", "52:54:00:00:00:02")}}
	for _, want := range []string{"objects=2 changed=2", "objects=2 changed=0"} {
		logs.Reset()
		if code, out := e.call("operator", "POST", "/api/v1/apply", apply); code != 200 {
			t.Fatalf("apply: %d %v", code, out)
		}
		if !strings.Contains(logs.String(), want) {
			t.Errorf("apply logged %q, want %q", logs.String(), want)
		}
	}
}

// TestAuditVerifyEmptyChain: a store without audit entries verifies (no entries,
// nothing to walk past the first, empty page).
func TestAuditVerifyEmptyChain(t *testing.T) {
	e := newEnv(t)
	code, out := e.call("viewer", "GET", "/api/v1/audit/verify", nil)
	if code != 200 || out["ok"] != true || out["entries"] != float64(0) {
		t.Errorf("verify of an empty chain: %d %v, want ok with 0 entries", code, out)
	}
}

// TestAPITokenListAndAudit: an admin lists every token (role and name, never the
// secret); creating and revoking a token each leave one audit entry naming it;
// an invalid name or role is refused and leaves none.
func TestAPITokenListAndAudit(t *testing.T) {
	e := newEnv(t)
	code, out := e.call("admin", "GET", "/api/v1/apitokens", nil)
	items, _ := out["items"].([]any)
	if code != 200 || len(items) != 3 {
		t.Fatalf("list tokens: %d %v, want 200 and the 3 tokens", code, out)
	}
	roles := map[any]bool{}
	for _, it := range items {
		roles[it.(map[string]any)["role"]] = true
	}
	if !roles["admin"] || !roles["operator"] || !roles["viewer"] {
		t.Errorf("listed roles %v", roles)
	}

	auditEntries := func() []any {
		_, a := e.call("admin", "GET", "/api/v1/audit", nil)
		entries, _ := a["items"].([]any)
		return entries
	}
	for _, bad := range []map[string]any{{"role": "viewer", "name": "Not A Name"}, {"role": "root", "name": "ci"}, {"role": "viewer", "extra": 1}} {
		if code, out := e.call("admin", "POST", "/api/v1/apitokens", bad); code < 400 {
			t.Errorf("create token %v: %d %v, want refused", bad, code, out)
		}
	}
	if n := len(auditEntries()); n != 0 {
		t.Fatalf("%d audit entries after refused creations, want 0", n)
	}
	code, out = e.call("admin", "POST", "/api/v1/apitokens", map[string]any{"role": "viewer", "name": "ci"})
	if code != 201 {
		t.Fatalf("create token: %d %v", code, out)
	}
	id, _ := out["id"].(string)
	if code, out := e.call("admin", "DELETE", "/api/v1/apitokens/"+id, nil); code != 200 {
		t.Fatalf("revoke token: %d %v", code, out)
	}
	if code, _ := e.call("admin", "DELETE", "/api/v1/apitokens/no-such-id", nil); code != 404 {
		t.Errorf("revoke a missing token: %d, want 404", code)
	}
	var got []string
	for _, it := range auditEntries() {
		m := it.(map[string]any)
		got = append(got, fmt.Sprint(m["action"], " ", m["kind"], " ", m["name"]))
	}
	want := []string{"create APIToken " + id, "revoke APIToken " + id}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("audit entries %v, want %v", got, want)
	}
}

// TestOpenAPIOperations: each operation documents exactly its path and query
// parameters (none at all when it takes none), its role, and whether it needs
// a token.
func TestOpenAPIOperations(t *testing.T) {
	e := newEnv(t)
	code, doc := e.call("", "GET", "/api/v1/openapi.json", nil)
	if code != 200 {
		t.Fatalf("openapi.json: %d", code)
	}
	paths, _ := doc["paths"].(map[string]any)
	cases := []struct {
		path, method string
		params       []string // "in:name"
		role         string   // "": no token needed
	}{
		{"/api/v1/whoami", "get", nil, "viewer"},
		{"/api/v1/openapi.json", "get", nil, ""},
		{"/api/v1/machines", "get", []string{"query:labelSelector", "query:limit", "query:continue", "query:watch", "query:resourceVersion"}, "viewer"},
		{"/api/v1/events", "get", []string{"query:machine", "query:type", "query:limit", "query:watch", "query:resourceVersion"}, "viewer"},
		{"/api/v1/machines", "post", nil, "operator"},
		{"/api/v1/machines/{name}", "get", []string{"path:name"}, "viewer"},
		{"/api/v1/machines/{name}", "delete", []string{"path:name", "query:resourceVersion", "query:cascade"}, "operator"},
		{"/api/v1/machines/{name}/events", "get", []string{"path:name", "query:limit"}, "viewer"},
		{"/api/v1/audit", "get", []string{"query:after", "query:limit", "query:tail"}, "viewer"},
		{"/api/v1/apitokens/{id}", "delete", []string{"path:id"}, "admin"},
	}
	for _, c := range cases {
		item, _ := paths[c.path].(map[string]any)
		op, ok := item[c.method].(map[string]any)
		if !ok {
			t.Errorf("%s %s: not documented", c.method, c.path)
			continue
		}
		raw, hasParams := op["parameters"]
		if len(c.params) == 0 && hasParams {
			t.Errorf("%s %s: parameters %v, want none (no key)", c.method, c.path, raw)
		}
		var got []string
		list, _ := raw.([]any)
		for _, p := range list {
			m := p.(map[string]any)
			got = append(got, fmt.Sprint(m["in"], ":", m["name"]))
		}
		if fmt.Sprint(got) != fmt.Sprint(c.params) {
			t.Errorf("%s %s: parameters %v, want %v", c.method, c.path, got, c.params)
		}
		_, secured := op["security"]
		if role, _ := op["x-kiln-role"].(string); role != c.role || secured != (c.role != "") {
			t.Errorf("%s %s: role %q security %v, want role %q", c.method, c.path, role, secured, c.role)
		}
	}
}

// TestOpenAPISchemas: schemas follow the Go types' json tags: embedded structs'
// fields are flattened in, omitempty and pointer fields are optional (no
// "required" at all when every field is), slices are arrays, times are
// date-times; a body-taking operation names its request schema.
func TestOpenAPISchemas(t *testing.T) {
	e := newEnv(t)
	_, doc := e.call("", "GET", "/api/v1/openapi.json", nil)
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	field := func(schema, path string) string {
		var v any = schemas[schema]
		for _, p := range strings.Split(path, ".") {
			m, _ := v.(map[string]any)
			v = m[p]
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	cases := []struct{ schema, path, want string }{
		{"APIToken", "required", `["id","name","role","createdAt"]`},
		{"APITokenCreated", "required", `["id","name","role","createdAt","token"]`},
		{"APITokenCreated", "properties.revokedAt", `{"format":"date-time","type":"string"}`},
		{"ReprovisionRequest", "required", `null`},
		{"ReprovisionRequest", "properties.noPower", `{"type":"boolean"}`},
		{"Machine", "properties.spec.properties.interfaces.type", `"array"`},
		{"AuditList", "properties.items.type", `"array"`},
		{"Metadata", "properties.labels", `{"additionalProperties":{"type":"string"},"type":"object"}`},
		{"Error", "properties.code", `{"type":"integer"}`},
	}
	for _, c := range cases {
		if got := field(c.schema, c.path); got != c.want {
			t.Errorf("%s.%s = %s, want %s", c.schema, c.path, got, c.want)
		}
	}
	if _, ok := schemas["ReprovisionRequest"].(map[string]any)["required"]; ok {
		t.Error(`ReprovisionRequest has a "required" key, want none (no field is required)`)
	}

	paths := doc["paths"].(map[string]any)
	bodies := []struct{ path, method, want string }{
		{"/api/v1/machines", "post", `"#/components/schemas/Machine"`},
		{"/api/v1/apply", "post", `"#/components/schemas/ApplyRequest"`},
		{"/api/v1/machines", "get", `null`},
		{"/api/v1/machines/{name}", "delete", `null`},
	}
	for _, c := range bodies {
		op, _ := paths[c.path].(map[string]any)[c.method].(map[string]any)
		var ref any
		if rb, ok := op["requestBody"].(map[string]any); ok {
			ref = rb["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any)["$ref"]
		}
		if got, _ := json.Marshal(ref); string(got) != c.want {
			t.Errorf("%s %s request body %s, want %s", c.method, c.path, got, c.want)
		}
	}
}
