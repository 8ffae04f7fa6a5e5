package enroll

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

func TestOperatorRoutes(t *testing.T) {
	e := newEnv(t)
	e.srv.ActorOf = func(r *http.Request) string { return "token:" + r.Header.Get("X-Test-Actor") }
	mux := http.NewServeMux()
	roles := map[string]string{}
	e.srv.RegisterOperator(func(method, path, role, summary string, h http.HandlerFunc) {
		if summary == "" || role == "" {
			t.Errorf("%s %s: no summary or role", method, path)
		}
		roles[method+" "+path] = role
		mux.Handle(method+" "+path, h)
	})
	if roles["POST /api/v1/enroll/machines/{name}/bootcert"] != "admin" || roles["GET /api/v1/enroll/jointokens"] != "viewer" {
		t.Fatalf("roles %v", roles)
	}
	ts := httptest.NewServer(mux)
	defer ts.Close()
	call := func(method, path, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		req.Header.Set("X-Test-Actor", "abc")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if out != nil {
			json.NewDecoder(res.Body).Decode(out)
		}
		return res.StatusCode
	}
	var created TokenCreated
	if code := call("POST", "/api/v1/enroll/jointokens", `{"profile":"worker","maxUses":3,"ttl":"2h","macs":["52-54-00-00-00-01"],"cidrs":["10.0.0.0/8"],"labels":{"rack":"r1"},"policy":["facts.cpus >= 2"]}`, &created); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	if created.Token == "" || created.MaxUses != 3 || created.MACs[0] != "52:54:00:00:00:01" || created.CAFingerprint != e.srv.CAFingerprint() {
		t.Fatalf("created %+v", created)
	}
	if exp := created.ExpiresAt.Sub(e.clock.Now()); exp < 119*time.Minute || exp > 121*time.Minute {
		t.Fatalf("expires in %s", exp)
	}
	// The store keeps the hash, never the token.
	obj := e.object("JoinToken", created.ID)
	if strings.Contains(string(obj.Spec)+string(obj.Status), created.Token) {
		t.Fatal("the token is stored")
	}
	spec, _ := resource.Typed[resource.JoinTokenSpec](obj)
	if spec.Hash != tokenHash(created.Token) {
		t.Fatal("stored hash is not the token's SHA-256")
	}
	if a := e.auditEntries("create"); len(a) == 0 || a[len(a)-1].Actor != "token:abc" || strings.Contains(a[len(a)-1].Summary, created.Token) {
		t.Fatalf("audit %+v", a)
	}
	var list TokenList
	if code := call("GET", "/api/v1/enroll/jointokens", "", &list); code != 200 || len(list.Items) != 1 || list.Items[0].ID != created.ID {
		t.Fatalf("list: %d %+v", code, list)
	}
	raw := map[string]any{}
	call("GET", "/api/v1/enroll/jointokens", "", &raw)
	if b, _ := json.Marshal(raw); strings.Contains(string(b), created.Token) || strings.Contains(string(b), "hash") {
		t.Fatal("the list shows the token or its hash")
	}
	if code := call("POST", "/api/v1/enroll/jointokens/"+created.ID+"/revoke", "", nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	call("GET", "/api/v1/enroll/jointokens", "", &list)
	if !list.Items[0].Revoked {
		t.Fatal("not revoked")
	}
	if code := call("POST", "/api/v1/enroll/jointokens/jt-nope/revoke", "", nil); code != 404 {
		t.Fatalf("revoke unknown: %d", code)
	}
	for _, bad := range []string{`{"profile":"nope"}`, `{"profile":"worker","maxUses":-1}`, `{"profile":"worker","ttl":"forever"}`,
		`{"profile":"worker","macs":["zz"]}`, `{"profile":"worker","policy":["facts.x >="]}`, `{"profile":"worker","ttl":"9000h"}`} {
		if code := call("POST", "/api/v1/enroll/jointokens", bad, nil); code != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d, want 422", bad, code)
		}
	}
	if code := call("POST", "/api/v1/enroll/jointokens", `{"profile":"worker","extra":1}`, nil); code != http.StatusBadRequest {
		t.Errorf("unknown field: %d", code)
	}
	var ca CAInfo
	if code := call("GET", "/api/v1/enroll/ca", "", &ca); code != 200 || ca.Fingerprint != e.srv.CAFingerprint() || !strings.Contains(ca.Certificate, "BEGIN CERTIFICATE") {
		t.Fatalf("ca: %d %+v", code, ca)
	}
	e.createMachine("op-1", "worker", "52:54:00:00:03:01", resource.StateProvisioning)
	var bc BootCert
	if code := call("POST", "/api/v1/enroll/machines/op-1/bootcert", `{"keyType":"ecdsa","ttl":"48h"}`, &bc); code != http.StatusCreated || !strings.Contains(bc.Key, "PRIVATE KEY") {
		t.Fatalf("bootcert: %d", code)
	}
	if code := call("POST", "/api/v1/enroll/machines/nope/bootcert", `{}`, nil); code != 404 {
		t.Fatalf("bootcert for an unknown machine: %d", code)
	}
	var rr RevokeResult
	if code := call("POST", "/api/v1/enroll/machines/op-1/revoke", "", &rr); code != 200 || len(rr.Serials) != 1 || rr.Serials[0] != bc.Serial {
		t.Fatalf("revoke machine: %d %+v", code, rr)
	}
	if code := call("POST", "/api/v1/enroll/machines/op-1/revoke", "", nil); code != http.StatusUnprocessableEntity {
		t.Fatalf("revoke again: %d", code)
	}
}

func TestHousekeep(t *testing.T) {
	e := newEnv(t)
	a := e.newAgent()
	e.enroll(a, e.token(TokenRequest{TTL: "1m"}), facts("52:54:00:00:04:01", "hostname", "hk-1"))
	e.token(TokenRequest{TTL: "720h"})
	e.srv.RevokeMachine(e.ctx, "token:admin", "hk-1")
	if n, err := e.srv.Housekeep(e.ctx); err != nil || n != 0 {
		t.Fatalf("nothing is old yet: %d %v", n, err)
	}
	e.clock.Advance(8 * 24 * time.Hour) // the 1m token expired over a week ago; the certificate expired
	n, err := e.srv.Housekeep(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || e.count("JoinToken") != 1 || e.count(revocationKind) != 0 || e.count(enrollKeyKind) != 1 {
		t.Fatalf("removed %d: tokens %d, revocations %d, keys %d", n, e.count("JoinToken"), e.count(revocationKind), e.count(enrollKeyKind))
	}
	e.clock.Advance(DefaultReplayWindow)
	if n, _ := e.srv.Housekeep(e.ctx); n != 2 || e.count(enrollKeyKind) != 0 {
		t.Fatalf("replay records older than the window: removed %d", n)
	}
}
