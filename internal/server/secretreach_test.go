package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/kilnhq/kiln/internal/store"
)

// apiCaller calls the production handler as one role.
type apiCaller struct {
	t      *testing.T
	h      http.Handler
	tokens map[string]string
}

func (c apiCaller) call(role, method, path string, body any) (int, string) {
	c.t.Helper()
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequest(method, path, rd)
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+c.tokens[role])
	}
	rec := httptest.NewRecorder()
	c.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func (c apiCaller) apply(role string, objs ...map[string]any) (int, string) {
	c.t.Helper()
	return c.call(role, "POST", "/api/v1/apply", map[string]any{"objects": objs})
}

func (c apiCaller) mustApply(objs ...map[string]any) {
	c.t.Helper()
	if code, body := c.apply(store.RoleAdmin, objs...); code != http.StatusOK {
		c.t.Fatalf("apply as admin: %d %s", code, body)
	}
}

// errorOnly keeps a response body for a message unless it succeeded: a created
// join token's body holds the token.
func errorOnly(code int, body string) string {
	if code < 300 {
		return "body withheld"
	}
	return body
}

func obj(kind, name string, labels map[string]string, spec map[string]any) map[string]any {
	return map[string]any{"kind": kind, "metadata": map[string]any{"name": name, "labels": labels}, "spec": spec}
}

// secretFleet: a Secret released to role=web and a profile that uses it, a BMC
// credential released to rack 1's machines only, and a profile without secrets.
func secretFleet(t *testing.T) apiCaller {
	t.Helper()
	s := newTestServer(t)
	c := apiCaller{t: t, h: s.http.Handler, tokens: roleTokens(t, s.store)}
	c.mustApply(
		obj("Artifact", "vmlinuz", nil, map[string]any{"source": "/srv/vmlinuz"}),
		obj("Secret", "web-tls-key", nil, map[string]any{"labels": map[string]string{"role": "web"}}),
		obj("Secret", "bmc-rack1", nil, map[string]any{"machines": []string{"rack1-node1"}}),
		obj("Profile", "web", nil, map[string]any{"boot": map[string]any{"kernel": "vmlinuz"}, "secrets": []string{"web-tls-key"}}),
		obj("Profile", "plain", nil, map[string]any{"boot": map[string]any{"kernel": "vmlinuz"}}),
	)
	for name, v := range map[string]string{"web-tls-key": "tls-key-value", "bmc-rack1": "root:rack1-password"} {
		code, body := c.call(store.RoleAdmin, "PUT", "/api/v1/secrets/"+name+"/value", map[string]string{"value": base64.StdEncoding.EncodeToString([]byte(v))})
		if code != http.StatusOK && code != http.StatusCreated {
			t.Fatalf("set %s: %d %s", name, code, body)
		}
	}
	return c
}

// TestOperatorJoinTokenCannotReachSecrets is issue 14 item 1(a): a join token is a
// way to a secret (enroll a host with it, then GET /config/secrets/...), so an
// operator may create one only for a profile without secrets and labels no
// Secret's release rules select; the rest is the admin's.
func TestOperatorJoinTokenCannotReachSecrets(t *testing.T) {
	c := secretFleet(t)
	cases := []struct {
		name string
		req  map[string]any
		role string
		want int
	}{
		{"operator, profile with secrets", map[string]any{"profile": "web", "labels": map[string]string{"role": "web"}}, store.RoleOperator, http.StatusForbidden},
		{"operator, labels a Secret selects", map[string]any{"profile": "plain", "labels": map[string]string{"role": "web"}}, store.RoleOperator, http.StatusForbidden},
		{"operator, machine a Secret names", map[string]any{"profile": "plain", "machine": "rack1-node1"}, store.RoleOperator, http.StatusForbidden},
		{"operator, nothing secret", map[string]any{"profile": "plain", "labels": map[string]string{"role": "db"}}, store.RoleOperator, http.StatusCreated},
		{"admin, profile with secrets", map[string]any{"profile": "web", "labels": map[string]string{"role": "web"}}, store.RoleAdmin, http.StatusCreated},
	}
	for _, tc := range cases {
		if code, body := c.call(tc.role, "POST", "/api/v1/enroll/jointokens", tc.req); code != tc.want {
			t.Errorf("POST /api/v1/enroll/jointokens, %s: %d, want %d (%s)", tc.name, code, tc.want, errorOnly(code, body))
		}
	}
	// The same through apply (kind: JoinToken), which also rewrites an existing
	// token's scope.
	tok := obj("JoinToken", "jt-web", nil, map[string]any{"profile": "web", "labels": map[string]string{"role": "web"}, "maxUses": 1})
	if code, body := c.apply(store.RoleOperator, tok); code != http.StatusForbidden {
		t.Errorf("apply JoinToken for profile web as operator: %d, want 403 (%s)", code, body)
	}
	c.mustApply(obj("JoinToken", "jt-plain", nil, map[string]any{"profile": "plain", "maxUses": 1}))
	widened := obj("JoinToken", "jt-plain", nil, map[string]any{"profile": "plain", "labels": map[string]string{"role": "web"}, "maxUses": 1})
	if code, body := c.apply(store.RoleOperator, widened); code != http.StatusForbidden {
		t.Errorf("apply a JoinToken's labels to role=web as operator: %d, want 403 (%s)", code, body)
	}
}

// fakeBMC is a TLS server that records every credential it is offered.
type fakeBMC struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []string
}

func newFakeBMC(t *testing.T) *fakeBMC {
	f := &fakeBMC{}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		user, pass, _ := r.BasicAuth()
		f.mu.Lock()
		f.got = append(f.got, string(body), user+":"+pass)
		f.mu.Unlock()
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeBMC) fingerprint() string {
	sum := sha256.Sum256(f.srv.Certificate().Raw)
	return hex.EncodeToString(sum[:])
}

func (f *fakeBMC) saw(s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, g := range f.got {
		if strings.Contains(g, s) {
			return true
		}
	}
	return false
}

// TestBMCCredentialsObeyReleaseRules is issue 14 item 1(b): a Machine whose BMC
// address is a host the caller controls, naming rack 1's credentials, must not
// make Kiln send them there. An operator may not point a BMC that uses a
// credential anywhere; even a machine an admin made gets the credential only if
// the Secret's release rules allow that machine.
func TestBMCCredentialsObeyReleaseRules(t *testing.T) {
	c := secretFleet(t)
	bmc := newFakeBMC(t)
	evil := obj("Machine", "evil", nil, map[string]any{
		"interfaces": []any{map[string]any{"mac": "52:54:00:00:0e:01"}},
		"bmc":        map[string]any{"driver": "redfish", "address": bmc.srv.URL, "caFingerprint": bmc.fingerprint(), "credentialsSecret": "bmc-rack1"},
	})
	if code, body := c.apply(store.RoleOperator, evil); code != http.StatusForbidden {
		t.Errorf("apply a Machine whose BMC uses bmc-rack1 as operator: %d, want 403 (%s)", code, body)
	}
	if code, body := c.call(store.RoleOperator, "POST", "/api/v1/machines", evil); code != http.StatusForbidden {
		t.Errorf("POST a Machine whose BMC uses bmc-rack1 as operator: %d, want 403 (%s)", code, body)
	}
	c.mustApply(evil) // an admin's mistake: the Secret's rules still do not allow "evil"
	code, body := c.call(store.RoleOperator, "POST", "/api/v1/machines/evil/power", map[string]any{"op": "status"})
	if bmc.saw("rack1-password") {
		t.Fatalf("power status sent rack 1's BMC password to a machine its Secret does not allow (%d %s)", code, body)
	}
	if !strings.Contains(body, "may not be released") {
		t.Errorf("power status: %d %s, want the release rules' refusal", code, body)
	}
	if code, body := c.call(store.RoleAdmin, "GET", "/api/v1/secrets/bmc-rack1/audit", nil); code != http.StatusOK ||
		!strings.Contains(body, "denied secret bmc-rack1 to the BMC of machine evil") {
		t.Errorf("secret audit after the refused release: %d %s, want a deny entry", code, body)
	}

	// Labels may change without touching the BMC; the BMC's address may not, and
	// when an admin moves it the audit keeps both addresses.
	relabelled := obj("Machine", "evil", map[string]string{"rack": "r9"}, evil["spec"].(map[string]any))
	if code, body := c.apply(store.RoleOperator, relabelled); code != http.StatusOK {
		t.Errorf("relabel a machine with a BMC as operator: %d %s, want 200", code, body)
	}
	moved := map[string]any{}
	for k, v := range evil["spec"].(map[string]any)["bmc"].(map[string]any) {
		moved[k] = v
	}
	moved["address"] = "https://192.0.2.7"
	spec := map[string]any{"interfaces": evil["spec"].(map[string]any)["interfaces"], "bmc": moved}
	if code, body := c.apply(store.RoleOperator, obj("Machine", "evil", map[string]string{"rack": "r9"}, spec)); code != http.StatusForbidden {
		t.Errorf("move the BMC address as operator: %d %s, want 403", code, body)
	}
	c.mustApply(obj("Machine", "evil", map[string]string{"rack": "r9"}, spec))
	code, body = c.call(store.RoleAdmin, "GET", "/api/v1/audit", nil)
	var list struct{ Items []struct{ Summary string } }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil || len(list.Items) == 0 {
		t.Fatalf("audit: %d %s", code, body)
	}
	want := `spec.bmc.address from "` + bmc.srv.URL + `" to "https://192.0.2.7"`
	if last := list.Items[len(list.Items)-1].Summary; !strings.Contains(last, want) {
		t.Errorf("audit after an admin moved the BMC: %q, want it to hold %s", last, want)
	}
}

// TestOperatorCannotWidenRelease: the other ways an operator could steer a secret to
// a host: relabel a machine (one enrolled with a harmless token) into a Secret's
// label rule, create a machine a Secret's rules already select (to enroll by MAC),
// or rewrite the Secret's own release rules. Each is the admin's.
func TestOperatorCannotWidenRelease(t *testing.T) {
	c := secretFleet(t)
	iface := []any{map[string]any{"mac": "52:54:00:00:0c:01"}}
	c.mustApply(obj("Machine", "db-1", map[string]string{"role": "db"}, map[string]any{"profile": "plain", "interfaces": iface}))
	cases := []struct {
		name string
		o    map[string]any
	}{
		{"relabel a machine into role=web", obj("Machine", "db-1", map[string]string{"role": "web"}, map[string]any{"profile": "plain", "interfaces": iface})},
		{"create a machine with role=web", obj("Machine", "web-9", map[string]string{"role": "web"}, map[string]any{"interfaces": []any{map[string]any{"mac": "52:54:00:00:0c:02"}}})},
		{"create the machine a Secret names", obj("Machine", "rack1-node1", nil, map[string]any{"interfaces": []any{map[string]any{"mac": "52:54:00:00:0c:03"}}})},
		{"widen a Secret's labels", obj("Secret", "web-tls-key", nil, map[string]any{"labels": map[string]string{"role": "db"}})},
		{"add a machine to a Secret", obj("Secret", "bmc-rack1", nil, map[string]any{"machines": []string{"rack1-node1", "db-1"}})},
	}
	for _, tc := range cases {
		if code, body := c.apply(store.RoleOperator, tc.o); code != http.StatusForbidden {
			t.Errorf("%s as operator: %d, want 403 (%s)", tc.name, code, body)
		}
	}
	// What reaches no secret stays the operator's.
	if code, body := c.apply(store.RoleOperator, obj("Machine", "db-1", map[string]string{"role": "db", "rack": "r2"}, map[string]any{"profile": "plain", "interfaces": iface})); code != http.StatusOK {
		t.Errorf("relabel within role=db as operator: %d %s, want 200", code, body)
	}
	if code, body := c.apply(store.RoleOperator, obj("Secret", "new-one", nil, map[string]any{"machines": []string{"db-1"}})); code != http.StatusOK {
		t.Errorf("create a Secret (no value yet) as operator: %d %s, want 200", code, body)
	}
}

// TestOperatorCannotLoosenAttestation: a Secret that requires attestation, and the
// TPM pin of a machine a Secret is released to, are the admin's to loosen or
// change; tightening, and pins of machines that reach no secret, stay the
// operator's.
func TestOperatorCannotLoosenAttestation(t *testing.T) {
	c := secretFleet(t)
	pin := func(b byte) map[string]any {
		return map[string]any{"ekSHA256": strings.Repeat(hex.EncodeToString([]byte{b}), 32)}
	}
	iface := func(last string) []any { return []any{map[string]any{"mac": "52:54:00:00:0d:" + last}} }
	c.mustApply(
		obj("Secret", "attested-key", nil, map[string]any{"machines": []string{"tpm-web"}, "attested": true, "attestedWithin": "15m"}),
		obj("Machine", "tpm-web", nil, map[string]any{"profile": "plain", "interfaces": iface("01"), "tpm": pin(1)}),
		obj("Machine", "tpm-plain", nil, map[string]any{"profile": "plain", "interfaces": iface("02"), "tpm": pin(1)}),
	)
	forbidden := []struct {
		name string
		o    map[string]any
	}{
		{"drop attested", obj("Secret", "attested-key", nil, map[string]any{"machines": []string{"tpm-web"}})},
		{"lengthen attestedWithin", obj("Secret", "attested-key", nil, map[string]any{"machines": []string{"tpm-web"}, "attested": true, "attestedWithin": "2h"})},
		{"re-pin a machine a Secret is released to", obj("Machine", "tpm-web", nil, map[string]any{"profile": "plain", "interfaces": iface("01"), "tpm": pin(2)})},
	}
	for _, tc := range forbidden {
		if code, body := c.apply(store.RoleOperator, tc.o); code != http.StatusForbidden {
			t.Errorf("%s as operator: %d, want 403 (%s)", tc.name, code, body)
		}
	}
	allowed := []struct {
		name string
		o    map[string]any
	}{
		{"shorten attestedWithin", obj("Secret", "attested-key", nil, map[string]any{"machines": []string{"tpm-web"}, "attested": true, "attestedWithin": "5m"})},
		{"re-pin a machine no Secret reaches", obj("Machine", "tpm-plain", nil, map[string]any{"profile": "plain", "interfaces": iface("02"), "tpm": pin(3)})},
	}
	for _, tc := range allowed {
		if code, body := c.apply(store.RoleOperator, tc.o); code != http.StatusOK {
			t.Errorf("%s as operator: %d, want 200 (%s)", tc.name, code, body)
		}
	}
}
