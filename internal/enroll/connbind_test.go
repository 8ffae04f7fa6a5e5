package enroll

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/kilnhq/kiln/internal/agent"
	"time"
)

// bootstrapAgent is an agent as internal/agent enrolls: one transport that presents a
// self-signed certificate of key until it has its machine certificate, and counts its
// TLS handshakes.
type bootstrapAgent struct {
	key        *ecdsa.PrivateKey
	cert       atomic.Pointer[tls.Certificate]
	handshakes atomic.Int32
	http       *http.Client
}

func (e *env) newBootstrapAgent(h2 bool, presentKey *ecdsa.PrivateKey) *bootstrapAgent {
	e.t.Helper()
	key, err := newP256()
	if err != nil {
		e.t.Fatal(err)
	}
	if presentKey == nil {
		presentKey = key
	}
	a := &bootstrapAgent{key: key}
	a.cert.Store(selfSignedClient(e.t, presentKey))
	cfg := &tls.Config{RootCAs: e.srv.CACertPool(), ServerName: "127.0.0.1",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.cert.Load(), nil },
		VerifyConnection:     func(tls.ConnectionState) error { a.handshakes.Add(1); return nil }}
	a.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2}}
	return a
}

func selfSignedClient(t testing.TB, key *ecdsa.PrivateKey) *tls.Certificate {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kiln-agent-enrollment"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (e *env) bootstrapEnroll(a *bootstrapAgent, tok, mac string) *EnrollResponse {
	e.t.Helper()
	body, _ := json.Marshal(EnrollRequest{Token: tok, CSR: csrPEM(e.t, nil, a.key), Facts: facts(mac)})
	code, data := e.post(a.http, "/enroll", body)
	if code != http.StatusOK {
		e.t.Fatalf("enroll: %d %s", code, data)
	}
	var resp EnrollResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		e.t.Fatal(err)
	}
	return &resp
}

// The connection an agent enrolled on, with a self-signed certificate of the key it
// had certified, speaks for the machine until the certificate is revoked; a new
// connection must present the machine certificate.
func TestEnrollmentConnectionSpeaksForTheMachine(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "http2"}[h2], func(t *testing.T) {
			e := newEnv(t)
			tok := e.token(TokenRequest{Profile: "worker", MaxUses: 10})
			a := e.newBootstrapAgent(h2, nil)
			resp := e.bootstrapEnroll(a, tok, "52:54:00:00:10:01")
			if !resp.BoundConnection {
				t.Fatal("the enrollment connection was not bound")
			}
			code, body := e.get(a.http, "/agent/v1/self")
			var self AgentSelf
			json.Unmarshal(body, &self)
			if code != http.StatusOK || self.Machine != resp.Machine || self.CertSerial != resp.Serial {
				t.Fatalf("self on the enrollment connection: %d %s", code, body)
			}
			if n := a.handshakes.Load(); n != 1 {
				t.Fatalf("%d TLS handshakes for enrollment and call, want 1", n)
			}
			// Still only its own data.
			e.createMachine("other", "worker", "52:54:00:00:10:99", "")
			if code, _ := e.get(a.http, "/agent/v1/machines/other"); code != http.StatusForbidden {
				t.Fatalf("another machine's record on the bound connection: %d", code)
			}

			// A new connection with the self-signed certificate is refused...
			a.http.CloseIdleConnections()
			code, body = e.get(a.http, "/agent/v1/self")
			mustContain(t, "new connection, self-signed certificate", string(body), "not issued by this Kiln's CA")
			if code != http.StatusUnauthorized {
				t.Fatalf("new connection with the self-signed certificate: %d", code)
			}
			// ...one with the machine certificate is let through.
			adopted := &agentClient{key: a.key, http: a.http}
			adopted.adopt(t, resp)
			a.cert.Store(adopted.cert)
			a.http.CloseIdleConnections()
			if code, body := e.get(a.http, "/agent/v1/self"); code != http.StatusOK {
				t.Fatalf("new connection with the machine certificate: %d %s", code, body)
			}

			// Revocation ends a bound connection at its next request.
			b := e.newBootstrapAgent(h2, nil)
			resp = e.bootstrapEnroll(b, tok, "52:54:00:00:10:02")
			if code, _ := e.get(b.http, "/agent/v1/self"); code != http.StatusOK {
				t.Fatalf("self before revocation: %d", code)
			}
			if _, err := e.srv.RevokeMachine(t.Context(), "test", resp.Machine); err != nil {
				t.Fatal(err)
			}
			code, body = e.get(b.http, "/agent/v1/self")
			mustContain(t, "bound connection after revocation", string(body), "no longer valid")
			if code != http.StatusUnauthorized || b.handshakes.Load() != 1 {
				t.Fatalf("bound connection after revocation: %d (%d handshakes)", code, b.handshakes.Load())
			}

			// A client key that is not the CSR's binds nothing.
			other, _ := newP256()
			c := e.newBootstrapAgent(h2, other)
			resp = e.bootstrapEnroll(c, tok, "52:54:00:00:10:03")
			if resp.BoundConnection {
				t.Fatal("a connection whose client key is not the certified one was bound")
			}
			if code, _ := e.get(c.http, "/agent/v1/self"); code != http.StatusUnauthorized {
				t.Fatalf("unbound connection: %d", code)
			}
		})
	}
}

// The agent's way: its CSR carries the enrollment connection's channel binding, and
// the connection goes on as the machine with no client certificate at all.
func TestChannelBoundEnrollment(t *testing.T) {
	e := newEnv(t)
	tok := e.token(TokenRequest{Profile: "worker"})
	before := acceptedConns.Load()
	id, err := agent.EnrollSession(e.ctx, agent.EnrollOptions{Server: e.url, CAFingerprint: e.srv.CAFingerprint(), Token: tok,
		Facts: facts("52:54:00:00:20:01", "hostname", "cb-1")})
	if err != nil {
		t.Fatal(err)
	}
	tr := agent.NewMTLSTransport(id)
	defer tr.Client().CloseIdleConnections()
	res, err := tr.Client().Get(e.url + "/agent/v1/self")
	if err != nil {
		t.Fatal(err)
	}
	var self AgentSelf
	json.NewDecoder(res.Body).Decode(&self)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || self.Machine != "cb-1" {
		t.Fatalf("self on the enrollment connection: %d %+v", res.StatusCode, self)
	}
	if n := acceptedConns.Load() - before; n != 1 {
		t.Fatalf("enrollment and call took %d connections, want 1", n)
	}
	// The event says the connection was bound.
	evs := e.events("cb-1")
	if len(evs) == 0 || evs[len(evs)-1].Type != "Enrolled" {
		t.Fatalf("events %v", evs)
	}
	mustContain(t, "Enrolled event", evs[len(evs)-1].Message, "the CSR was bound to its TLS connection")
}
