package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/testclock"
	"github.com/kilnhq/kiln/internal/testkit"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchServerEnv); spec != "" {
		// Server mode of BenchmarkEnrollHTTPS.
		if err := runBenchServer(spec); err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(pgtest.Main(m))
}

// env is an enrollment server on SQLite behind a real HTTPS listener on loopback.
type env struct {
	t     testing.TB
	ctx   context.Context
	st    store.Store
	srv   *Server
	url   string
	clock *testclock.Clock
	dir   string
}

type envOption func(*Config)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	dir := t.TempDir()
	return newEnvOn(t, testkit.OpenSQLite(t, dir), dir, opts...)
}

func newEnvOn(t testing.TB, st store.Store, dir string, opts ...envOption) *env {
	t.Helper()
	ctx := context.Background()
	seed(t, st)
	cfg := Config{DataDir: dir, ServerSANs: []string{"127.0.0.1", "localhost"}, PublicURL: "https://127.0.0.1:1"}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(ctx, st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	clock := testclock.New(time.Now().UTC())
	srv.Now = clock.Now
	e := &env{t: t, ctx: ctx, st: st, srv: srv, clock: clock, dir: dir}
	e.url = serveHTTPS(t, srv, nil)
	return e
}

// acceptedConns counts the connections the servers of serveHTTPS accepted.
var acceptedConns atomic.Int64

// serveHTTPS serves srv's routes (and the agent routes behind AgentAuth) on a loopback
// HTTPS listener; extra, if set, adds routes.
func serveHTTPS(t testing.TB, srv *Server, extra func(mux *http.ServeMux)) string {
	mux := http.NewServeMux()
	srv.Register(mux)
	agentMux := http.NewServeMux()
	srv.RegisterAgent(agentMux)
	agentMux.Handle("GET /agent/v1/machines/{machine}", srv.OwnMachineOnly("machine", http.HandlerFunc(srv.handleSelf)))
	mux.Handle("/agent/", srv.AgentAuth(agentMux))
	if extra != nil {
		extra(mux)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, TLSConfig: srv.TLSConfig(), ConnContext: ConnContext, ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				acceptedConns.Add(1)
			}
		}}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	return "https://" + ln.Addr().String()
}

// seed adds the profiles tests use.
func seed(t testing.TB, st store.Store) {
	t.Helper()
	if err := seedStore(st); err != nil {
		t.Fatal(err)
	}
}

// seedStore applies the profiles the tests enroll into, as an operator would; a
// second apply changes nothing. It takes no testing.TB: the bench server seeds too.
func seedStore(st store.Store) error {
	_, err := testkit.Apply(context.Background(), &inventory.Service{Store: st}, seedProfiles)
	return err
}

// seedProfiles are the profiles the tests enroll into.
const seedProfiles = `
kind: Profile
metadata: {name: worker}
spec: {boot: {agent: true}}
---
kind: Profile
metadata: {name: db}
spec: {boot: {agent: true}}
---
kind: Profile
metadata: {name: big-only}
spec: {boot: {agent: true}, enrollPolicy: ["facts.memory_mb >= 65536"]}
`

func (e *env) createMachine(name, profile, mac, state string) {
	e.t.Helper()
	spec, _ := json.Marshal(resource.MachineSpec{Profile: profile, Interfaces: []resource.Interface{{MAC: mac}}})
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		return tx.Create(e.ctx, &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: name}, Spec: spec,
			Status: json.RawMessage(`{"state":"` + state + `"}`)})
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) token(req TokenRequest) string {
	e.t.Helper()
	if req.Profile == "" {
		req.Profile = "worker"
	}
	out, err := e.srv.CreateToken(e.ctx, "token:test", req)
	if err != nil {
		e.t.Fatal(err)
	}
	return out.Token
}

// agentClient is a simulated agent.
type agentClient struct {
	key  crypto.Signer
	cert *tls.Certificate
	http *http.Client
}

func (e *env) newAgent() *agentClient {
	e.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	a := &agentClient{key: key}
	a.setClient(e.srv.CACertPool())
	return a
}

func (a *agentClient) setClient(roots *x509.CertPool) {
	cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	if a.cert != nil {
		cfg.Certificates = []tls.Certificate{*a.cert}
	}
	a.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

func csrPEM(t testing.TB, tmpl *x509.CertificateRequest, key crypto.Signer) string {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// post sends a JSON body and returns the status and decoded body.
func (e *env) post(c *http.Client, path string, body []byte) (int, []byte) {
	e.t.Helper()
	res, err := c.Post(e.url+path, "application/json", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res.StatusCode, data
}

func (e *env) get(c *http.Client, path string) (int, []byte) {
	e.t.Helper()
	res, err := c.Get(e.url + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res.StatusCode, data
}

// enroll enrolls a with tok; on success it keeps the certificate.
func (e *env) enroll(a *agentClient, tok string, facts map[string]any) (int, *EnrollResponse, string) {
	e.t.Helper()
	return e.enrollCSR(a, tok, csrPEM(e.t, nil, a.key), facts)
}

func (e *env) enrollCSR(a *agentClient, tok, csr string, facts map[string]any) (int, *EnrollResponse, string) {
	e.t.Helper()
	body, _ := json.Marshal(EnrollRequest{Token: tok, CSR: csr, Facts: facts})
	code, data := e.post(a.http, "/enroll", body)
	if code != http.StatusOK {
		var er ErrorResponse
		_ = json.Unmarshal(data, &er)
		return code, nil, er.Error
	}
	var resp EnrollResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		e.t.Fatal(err)
	}
	a.adopt(e.t, &resp)
	return code, &resp, ""
}

func (a *agentClient) adopt(t testing.TB, resp *EnrollResponse) {
	b, _ := pem.Decode([]byte(resp.Certificate))
	if b == nil {
		t.Fatal("no certificate in the response")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	a.cert = &tls.Certificate{Certificate: [][]byte{b.Bytes}, PrivateKey: a.key, Leaf: c}
	roots := a.http.Transport.(*http.Transport).TLSClientConfig.RootCAs
	a.setClient(roots)
}

func facts(mac string, extra ...any) map[string]any {
	f := map[string]any{"interfaces": []any{map[string]any{"name": "eth0", "mac": mac}}}
	for i := 0; i+1 < len(extra); i += 2 {
		f[extra[i].(string)] = extra[i+1]
	}
	return f
}

func (e *env) auditEntries(action string) []audit.Entry {
	e.t.Helper()
	return testkit.AuditEntries(e.t, e.st, action)
}

func (e *env) events(machine string) []store.Event {
	e.t.Helper()
	var out []store.Event
	err := e.st.View(e.ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.ListEvents(e.ctx, machine, 1000)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) count(kind string) int {
	e.t.Helper()
	var n int
	err := e.st.View(e.ctx, func(tx store.Tx) error {
		objs, err := listAll(e.ctx, tx, kind)
		n = len(objs)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) tokenUses(id string) int {
	e.t.Helper()
	var o *resource.Object
	err := e.st.View(e.ctx, func(tx store.Tx) error {
		var err error
		o, err = tx.Get(e.ctx, "JoinToken", id)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return tokenInfo(o).Uses
}

func (e *env) machine(name string) *resource.Object { return e.object("Machine", name) }

func (e *env) object(kind, name string) *resource.Object {
	e.t.Helper()
	var o *resource.Object
	err := e.st.View(e.ctx, func(tx store.Tx) error {
		var err error
		o, err = tx.Get(e.ctx, kind, name)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

func tokenID(t testing.TB, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := b64.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c Claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// selfSignedCA makes a CA outside Kiln (for "another CA" cases and imports).
func selfSignedCA(t testing.TB, cn string, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func mustContain(t testing.TB, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("%s: %q does not contain %q", what, got, want)
	}
}

func fmtJSON(v any) string {
	b, _ := json.Marshal(v)
	return fmt.Sprint(string(b))
}

var loopback = netip.MustParseAddr("127.0.0.1")

func newP256() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }
