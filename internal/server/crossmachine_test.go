package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/enroll"
	"github.com/kilnhq/kiln/internal/store"
)

// machineClient is an enrolled agent: its key, and an HTTPS client presenting the
// certificate Kiln issued for it.
type machineClient struct {
	name string
	http *http.Client
}

// newTLSTestServer is newTestServer with the HTTPS listener (mTLS for agents) serving.
func newTLSTestServer(t *testing.T) (*Server, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0", Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	go s.https.ServeTLS(s.tlsLn, "", "")
	t.Cleanup(func() {
		cancel()
		s.https.Close()
		s.listener.Close()
		s.store.Close()
	})
	return s, "https://" + s.tlsLn.Addr().String()
}

// enrollMachine enrolls a new agent with a join token an admin made, as the agent
// does (POST /enroll with a CSR over TLS), and returns it holding its certificate.
func enrollMachine(t *testing.T, c apiCaller, s *Server, base, hostname, mac string) machineClient {
	t.Helper()
	code, body := c.call(store.RoleAdmin, "POST", "/api/v1/enroll/jointokens", map[string]any{"profile": "web", "labels": map[string]string{"role": "web"}})
	if code != http.StatusCreated {
		t.Fatalf("join token: %d %s", code, body)
	}
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(enroll.EnrollRequest{Token: tok.Token, CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		Facts: map[string]any{"hostname": hostname, "interfaces": []any{map[string]any{"name": "eth0", "mac": mac}}}})
	roots := s.enroll.CACertPool()
	anon := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}}}
	res, err := anon.Post(base+"/enroll", "application/json", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("enroll %s: %d %s", hostname, res.StatusCode, data)
	}
	var er enroll.EnrollResponse
	if err := json.Unmarshal(data, &er); err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(er.Certificate))
	if b == nil {
		t.Fatalf("enroll %s: no certificate", hostname)
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{b.Bytes}, PrivateKey: key, Leaf: leaf}
	return machineClient{name: er.Machine, http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}}}}}
}

func (m machineClient) do(t *testing.T, method, url string, body any) (int, string) {
	t.Helper()
	var rd io.Reader = http.NoBody
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, url, rd)
	res, err := m.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(data)
}

// TestCrossMachineAccessOnProductionRoutes (issue 20): OwnMachineOnly guards a route
// production does not serve, so this walks what production serves to machines,
// through the handler `kiln serve` assembles, with machine beta's certificate
// against machine alpha's secret, config and workflow.
func TestCrossMachineAccessOnProductionRoutes(t *testing.T) {
	s, base := newTLSTestServer(t)
	c := apiCaller{t: t, h: s.http.Handler, tokens: roleTokens(t, s.store)}
	c.mustApply(
		obj("Artifact", "vmlinuz", nil, map[string]any{"source": "/srv/vmlinuz"}),
		obj("Template", "reboot-only", nil, map[string]any{"actions": []any{map[string]any{"name": "reboot", "type": "reboot"}}}),
		obj("Secret", "alpha-key", nil, map[string]any{"machines": []string{"alpha"}}),
		obj("Profile", "web", nil, map[string]any{"boot": map[string]any{"kernel": "vmlinuz"}, "workflow": "reboot-only", "secrets": []string{"alpha-key"},
			"configs": map[string]any{"files": map[string]string{"key.cfg": `key={{ secret "alpha-key" }}`}}}),
	)
	const alphaValue = "alpha-secret-value"
	if code, body := c.call(store.RoleAdmin, "PUT", "/api/v1/secrets/alpha-key/value", map[string]string{"value": "YWxwaGEtc2VjcmV0LXZhbHVl"}); code >= 300 {
		t.Fatalf("set alpha-key: %d %s", code, body)
	}
	alpha := enrollMachine(t, c, s, base, "alpha", "52:54:00:00:0a:01")
	beta := enrollMachine(t, c, s, base, "beta", "52:54:00:00:0b:01")
	if alpha.name != "alpha" || beta.name != "beta" {
		t.Fatalf("enrolled as %q and %q", alpha.name, beta.name)
	}
	code, body := c.call(store.RoleOperator, "POST", "/api/v1/machines/alpha/reprovision", nil)
	var wf struct{ Name string }
	if code >= 300 || json.Unmarshal([]byte(body), &wf) != nil || wf.Name == "" {
		t.Fatalf("reprovision alpha: %d %s", code, body)
	}

	// Alpha gets its own secret: the setup works.
	if code, body := alpha.do(t, "GET", base+"/config/secrets/alpha-key", nil); code != http.StatusOK || body != alphaValue {
		t.Fatalf("alpha's own secret: %d", code)
	}
	// Beta asks for alpha's secret, alpha's rendered file, alpha's workflow.
	if code, body := beta.do(t, "GET", base+"/config/secrets/alpha-key", nil); code != http.StatusForbidden || strings.Contains(body, alphaValue) {
		t.Errorf("beta GET alpha's secret: %d (value in body: %v), want 403", code, strings.Contains(body, alphaValue))
	}
	if code, body := beta.do(t, "GET", base+"/config/files/key.cfg", nil); code == http.StatusOK || strings.Contains(body, alphaValue) {
		t.Errorf("beta GET a config that inlines alpha's secret: %d (value in body: %v), want a refusal", code, strings.Contains(body, alphaValue))
	}
	if code, body := beta.do(t, "GET", base+"/agent/v1/workflow", nil); strings.Contains(body, wf.Name) {
		t.Errorf("beta GET its workflow: %d %s: it shows alpha's %s", code, body, wf.Name)
	}
	// Beta reports on alpha's workflow: refused, and alpha's workflow is untouched.
	if code, body := beta.do(t, "POST", base+"/agent/v1/workflows/"+wf.Name+"/actions/reboot", map[string]any{"state": "succeeded"}); code < 400 {
		t.Errorf("beta reports on alpha's workflow: %d %s, want a refusal", code, body)
	}
	code, body = c.call(store.RoleViewer, "GET", "/api/v1/machines/alpha/workflow", nil)
	if code != http.StatusOK || strings.Contains(body, `"succeeded"`) {
		t.Errorf("alpha's workflow after beta's report: %d %s, want it unchanged", code, body)
	}
	// Beta's facts go to beta, never to alpha.
	if code, body := beta.do(t, "POST", base+"/agent/v1/facts", map[string]any{"hostname": "alpha", "planted": "by-beta"}); code >= 300 {
		t.Fatalf("beta facts: %d %s", code, body)
	}
	if _, body := c.call(store.RoleViewer, "GET", "/api/v1/machines/alpha", nil); strings.Contains(body, "by-beta") {
		t.Errorf("beta's facts landed on alpha: %s", body)
	}
	// Without a certificate, nothing.
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.enroll.CACertPool(), ServerName: "127.0.0.1"}}}
	for _, p := range []string{"/config/secrets/alpha-key", "/config/files/key.cfg", "/agent/v1/workflow"} {
		res, err := anon.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a certificate: %d, want 401", p, res.StatusCode)
		}
	}
}
