package agent

import (
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
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/enroll"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// kilnForEnroll runs the enrollment service on SQLite behind HTTPS on loopback.
func kilnForEnroll(t *testing.T) (*enroll.Server, store.Store, string) {
	t.Helper()
	return startEnrollKiln(t, false)
}

// kilnForEnrollWithURL is kilnForEnroll with the server's URL configured (written
// into tokens).
func kilnForEnrollWithURL(t *testing.T) (*enroll.Server, store.Store, string) {
	t.Helper()
	return startEnrollKiln(t, true)
}

func startEnrollKiln(t *testing.T, withURL bool) (*enroll.Server, store.Store, string) {
	ctx := context.Background()
	env := testkit.NewStore(t, "kind: Profile\nmetadata: {name: worker}\nspec: {boot: {agent: true}}")
	dir, st := env.Dir, env.Store
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + ln.Addr().String()
	cfg := enroll.Config{DataDir: dir, ServerSANs: []string{"127.0.0.1"}}
	if withURL {
		cfg.PublicURL = url
	}
	srv, err := enroll.New(ctx, st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	agentMux := http.NewServeMux()
	srv.RegisterAgent(agentMux)
	mux.Handle("/agent/", srv.AgentAuth(agentMux))
	record := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			kilnCurves.Store(r.URL.Path, r.TLS.CurveID)
		}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			kilnSources.Store(r.URL.Path, host)
		}
		mux.ServeHTTP(w, r)
	})
	hs := &http.Server{Handler: record, TLSConfig: srv.TLSConfig(), ConnContext: enroll.ConnContext,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				kilnConns.Add(1)
			}
		}}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	return srv, st, url
}

// kilnConns counts the connections made to the servers of startEnrollKiln;
// kilnCurves has the key exchange of the last request to each path, kilnSources
// its source address.
var (
	kilnConns   atomic.Int64
	kilnCurves  sync.Map
	kilnSources sync.Map
)

// The agent goes on as the machine on the connection it enrolled on (Kiln binds it),
// and makes new connections with the machine certificate.
func TestEnrollGoesOnOnTheEnrollmentConnection(t *testing.T) {
	srv, _, url := kilnForEnroll(t)
	ctx := context.Background()
	tok, err := srv.CreateToken(ctx, "token:test", enroll.TokenRequest{Profile: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	before := kilnConns.Load()
	id, err := Enroll(ctx, EnrollOptions{Server: url, CAFingerprint: srv.CAFingerprint(), Token: tok.Token, Dir: filepath.Join(t.TempDir(), "id"),
		Facts: map[string]any{"hostname": "bound-1"}})
	if err != nil {
		t.Fatal(err)
	}
	tr := NewMTLSTransport(id)
	self := func() string {
		t.Helper()
		res, err := tr.Client().Get(tr.BaseURL() + "/agent/v1/self")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("self: %d %s", res.StatusCode, b)
		}
		return string(b)
	}
	if body := self(); !strings.Contains(body, `"machine":"bound-1"`) {
		t.Fatalf("self: %s", body)
	}
	if n := kilnConns.Load() - before; n != 1 {
		t.Fatalf("enrollment and first call took %d connections, want 1", n)
	}
	tr.Client().CloseIdleConnections()
	self()
	if n := kilnConns.Load() - before; n != 2 {
		t.Fatalf("%d connections after a reconnect, want 2", n)
	}
	// What can carry a secret goes over a post-quantum key exchange, the rest over P-256.
	for path, want := range map[string]tls.CurveID{"/enroll": tls.CurveP256, "/agent/v1/self": tls.CurveP256,
		"/config/ignition": tls.X25519MLKEM768, "/secret-handles/x": tls.X25519MLKEM768} {
		if path != "/enroll" {
			res, err := tr.Client().Get(tr.BaseURL() + path)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
		}
		if got, _ := kilnCurves.Load(path); got != want {
			t.Errorf("%s: key exchange %v, want %v", path, got, want)
		}
	}
}

// EnrollOptions.Dialer picks the source address of the enrollment connection and of
// the transport's later connections (benchmarks run agents from distinct loopback
// addresses); without it the connections come from the default source.
func TestEnrollDialsFromTheDialersAddress(t *testing.T) {
	srv, _, url := kilnForEnroll(t)
	ctx := context.Background()
	tok, err := srv.CreateToken(ctx, "token:test", enroll.TokenRequest{Profile: "worker", MaxUses: 2})
	if err != nil {
		t.Fatal(err)
	}
	const src = "127.0.0.7"
	if ln, err := net.Listen("tcp", src+":0"); err != nil {
		t.Skipf("no loopback address %s here: %v", src, err)
	} else {
		ln.Close()
	}
	source := func(path string) string {
		v, _ := kilnSources.Load(path)
		s, _ := v.(string)
		return s
	}
	id, err := EnrollSession(ctx, EnrollOptions{Server: url, CAFingerprint: srv.CAFingerprint(), Token: tok.Token,
		Facts: map[string]any{"hostname": "dialer-1"}, Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := source("/enroll"); got != src {
		t.Errorf("enrolled from %q, want %s", got, src)
	}
	tr := NewMTLSTransport(id)
	tr.Client().CloseIdleConnections() // the call below makes a new connection
	res, err := tr.Client().Get(tr.BaseURL() + "/agent/v1/self")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := source("/agent/v1/self"); res.StatusCode != http.StatusOK || got != src {
		t.Errorf("call on a new connection: %d from %q, want 200 from %s", res.StatusCode, got, src)
	}
	id, err = EnrollSession(ctx, EnrollOptions{Server: url, CAFingerprint: srv.CAFingerprint(), Token: tok.Token,
		Facts: map[string]any{"hostname": "dialer-2"}})
	if err != nil {
		t.Fatal(err)
	}
	id.Close()
	if got := source("/enroll"); got != "127.0.0.1" {
		t.Errorf("enrolled without a dialer from %q, want 127.0.0.1", got)
	}
}

func TestEnrollStoresIdentityAndRenews(t *testing.T) {
	srv, _, url := kilnForEnroll(t)
	ctx := context.Background()
	tok, err := srv.CreateToken(ctx, "token:test", enroll.TokenRequest{Profile: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "kiln-agent")
	// The fingerprint is accepted in the colon form `openssl x509 -fingerprint` prints.
	var colon []string
	for i := 0; i < 64; i += 2 {
		colon = append(colon, strings.ToUpper(srv.CAFingerprint()[i:i+2]))
	}
	// Real facts of this host (any Linux host can enroll).
	id, err := Enroll(ctx, EnrollOptions{Server: url, CAFingerprint: strings.Join(colon, ":"), Token: tok.Token, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if id.Machine == "" || id.Cert.Subject.CommonName != id.Machine {
		t.Fatalf("identity %+v", id)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("identity directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	loaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Machine != id.Machine || loaded.CAFingerprint != srv.CAFingerprint() || loaded.Server != url {
		t.Fatalf("loaded %+v", loaded)
	}
	want := id.Cert.NotBefore.Add(id.Cert.NotAfter.Sub(id.Cert.NotBefore) * 2 / 3)
	if !loaded.RenewAt().Equal(want) {
		t.Fatalf("RenewAt %s, want %s", loaded.RenewAt(), want)
	}
	// mTLS as the machine, through the transport the agent uses.
	tr := NewMTLSTransport(loaded)
	self := func() (int, string) {
		res, err := tr.Client().Get(tr.BaseURL() + "/agent/v1/self")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := self(); code != http.StatusOK || !strings.Contains(body, `"machine":"`+id.Machine+`"`) {
		t.Fatalf("self: %d %s", code, body)
	}
	// Not due yet: nothing happens.
	if _, renewed, err := loaded.RenewIfDue(ctx, time.Now()); err != nil || renewed {
		t.Fatalf("RenewIfDue before 2/3: %v %v", renewed, err)
	}
	oldSerial := loaded.Cert.SerialNumber
	if _, renewed, err := loaded.RenewIfDue(ctx, loaded.RenewAt().Add(time.Second)); err != nil || !renewed {
		t.Fatalf("RenewIfDue after 2/3: %v %v", renewed, err)
	}
	again, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Cert.SerialNumber.Cmp(oldSerial) == 0 || again.Machine != id.Machine {
		t.Fatal("renewal did not store a new certificate")
	}
	// The transport still holds the old certificate, which Kiln now refuses...
	tr.Client().CloseIdleConnections()
	if code, body := self(); code != http.StatusUnauthorized {
		t.Fatalf("old certificate after renewal: %d %s", code, body)
	}
	// ...and renewing through the transport switches it to the new one.
	tr2 := NewMTLSTransport(again)
	if err := tr2.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	tr = tr2
	if code, body := self(); code != http.StatusOK {
		t.Fatalf("after transport renewal: %d %s", code, body)
	}
}

func TestEnrollRefusesWrongPinBeforeSendingTheToken(t *testing.T) {
	srv, st, url := kilnForEnroll(t)
	ctx := context.Background()
	tok, _ := srv.CreateToken(ctx, "token:test", enroll.TokenRequest{Profile: "worker"})
	_, err := Enroll(ctx, EnrollOptions{Server: url, CAFingerprint: strings.Repeat("ab", 32), Token: tok.Token, Dir: t.TempDir(), Facts: map[string]any{}})
	if err == nil || !strings.Contains(err.Error(), "does not contain the CA with fingerprint") {
		t.Fatalf("wrong pin: %v", err)
	}
	// The server saw no enrollment at all: the token is unused.
	var uses int
	st.View(ctx, func(tx store.Tx) error {
		o, err := tx.Get(ctx, "JoinToken", tok.ID)
		if err == nil {
			var s struct{ Uses int }
			json.Unmarshal(o.Status, &s)
			uses = s.Uses
		}
		return err
	})
	if uses != 0 {
		t.Fatalf("token used %d times", uses)
	}
	// A refused enrollment is reported with Kiln's reason.
	_, err = Enroll(ctx, EnrollOptions{Server: url, CAFingerprint: srv.CAFingerprint(), Token: "x.y.z", Dir: t.TempDir(), Facts: map[string]any{}})
	var se *ServerError
	if !errors.As(err, &se) || se.Status != http.StatusUnauthorized || !strings.Contains(se.Reason, "token: malformed") {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := Enroll(ctx, EnrollOptions{Server: "http://127.0.0.1:1", CAFingerprint: srv.CAFingerprint(), Token: "t"}); err == nil || !strings.Contains(err.Error(), "https://") {
		t.Fatalf("plain http server URL: %v", err)
	}
}

func TestTokenIssuer(t *testing.T) {
	srv, _, url := kilnForEnrollWithURL(t)
	tok, err := srv.CreateToken(context.Background(), "token:test", enroll.TokenRequest{Profile: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	if got := TokenIssuer(tok.Token); got != url {
		t.Fatalf("issuer %q, want %q", got, url)
	}
	// Enrolling with the token alone (and the pin) finds the server.
	if _, err := Enroll(context.Background(), EnrollOptions{CAFingerprint: srv.CAFingerprint(), Token: tok.Token, Dir: t.TempDir(), Facts: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "a.b", "a.!!.c", "a." + strings.Repeat("x", 9000) + ".c"} {
		if TokenIssuer(bad) != "" {
			t.Errorf("TokenIssuer(%.20q) not empty", bad)
		}
	}
}

func TestCmdlineEnrollment(t *testing.T) {
	s, fp, tok := CmdlineEnrollment(`BOOTIF=01-52-54-00-00-00-01 kiln.server=https://10.0.0.2:8443 kiln.ca_fingerprint=abcd quiet kiln.token=eyJ.a.b`)
	if s != "https://10.0.0.2:8443" || fp != "abcd" || tok != "eyJ.a.b" {
		t.Fatalf("%q %q %q", s, fp, tok)
	}
}

// The certificate in Kiln's answer must be for the agent's key, under the pinned CA's
// name, for client authentication.
func TestIdentityFromChecksTheAnswer(t *testing.T) {
	mkCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		c, _ := x509.ParseCertificate(der)
		return c, k
	}
	pinned, pinnedKey := mkCA("Kiln CA")
	other, otherKey := mkCA("Someone else")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	issue := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, pub crypto.PublicKey, eku x509.ExtKeyUsage) string {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "web-1"},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{eku}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	chain := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pinned.Raw}))
	fp := certFingerprint(pinned.Raw)
	otherKeyPair, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name, cert, want string
	}{
		{"good", issue(pinned, pinnedKey, key.Public(), x509.ExtKeyUsageClientAuth), ""},
		{"another CA", issue(other, otherKey, key.Public(), x509.ExtKeyUsageClientAuth), "not from the pinned CA"},
		{"another key", issue(pinned, pinnedKey, otherKeyPair.Public(), x509.ExtKeyUsageClientAuth), "not for this machine's key"},
		{"server certificate", issue(pinned, pinnedKey, key.Public(), x509.ExtKeyUsageServerAuth), "not for client authentication"},
	} {
		_, err := identityFrom(t.TempDir(), "https://kiln", key, &agentwire.EnrollResponse{Certificate: tc.cert, CAChain: chain}, fp)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
