package secrets

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// testCA is a self-made CA issuing a server certificate and machine certificates, as
// the enrollment service will.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// certIdentity is what the enrollment middleware does: the machine is the verified
// client certificate's subject.
func certIdentity(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return "", false
	}
	return r.TLS.VerifiedChains[0][0].Subject.CommonName, true
}

func TestMTLSMachineSeesOnlyItsOwn(t *testing.T) {
	e := newFleet(t)
	e.apply("kind: Secret\nmetadata: {name: web-2-only}\nspec: {machines: [web-2]}\n")
	e.set("web-2-only", "for-web-2-"+dbPassword)
	ca := newTestCA(t, "kiln test CA")
	e.srv.Identity = certIdentity
	srv := httptest.NewUnstartedServer(e.mux)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "kiln", true)},
		ClientCAs:    ca.pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
	srv.StartTLS()
	defer srv.Close()
	client := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: ca.pool}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	}
	web1 := ca.issue(t, "web-1", false)
	a := client(&web1)
	get := func(c *http.Client, path string) (int, string) {
		t.Helper()
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(a, "/config/ignition"); code != 200 || !strings.Contains(body, `"3.3.0"`) {
		t.Fatalf("own ignition: %d %s", code, body)
	}
	if code, body := get(a, "/config/secrets/db-password"); code != 200 || body != dbPassword {
		t.Fatalf("own secret: %d", code)
	}
	// Machine B's config and B's secret: 403, audited.
	if code, body := get(a, "/config/ignition?machine=web-2"); code != 403 || strings.Contains(body, "storage") {
		t.Fatalf("B's config with A's certificate: %d %s", code, body)
	}
	if code, body := get(a, "/config/cloud-init/user-data?machine=web-2"); code != 403 || strings.Contains(body, "cloud-config") {
		t.Fatalf("B's user-data with A's certificate: %d %s", code, body)
	}
	if code, body := get(a, "/config/secrets/web-2-only"); code != 403 || strings.Contains(body, "for-web-2") {
		t.Fatalf("B's secret with A's certificate: %d %s", code, body)
	}
	entries := e.auditEntries()
	if countAudit(entries, "deny", "machine web-1 (client certificate) asked for the ignition config of machine web-2") != 1 ||
		countAudit(entries, "deny", "machine web-1 (client certificate) asked for the cloud-init/user-data config of machine web-2") != 1 ||
		countAudit(entries, "deny", "denied secret web-2-only to machine web-1 via mtls") != 1 {
		t.Fatalf("denials not audited: %+v", entries)
	}
	// B itself gets its secret.
	web2 := ca.issue(t, "web-2", false)
	if code, body := get(client(&web2), "/config/secrets/web-2-only"); code != 200 || !strings.HasPrefix(body, "for-web-2") {
		t.Fatalf("B's own secret: %d", code)
	}
	// No certificate: 401. A certificate from another CA naming web-1: not accepted
	// (Go's client does not even offer it, as the server names its CA; the server
	// would fail the handshake).
	if code, _ := get(client(nil), "/config/ignition"); code != 401 {
		t.Fatalf("no certificate: %d", code)
	}
	rogue := newTestCA(t, "rogue").issue(t, "web-1", false)
	if resp, err := client(&rogue).Get(srv.URL + "/config/secrets/db-password"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || strings.Contains(string(b), dbPassword) {
			t.Fatalf("a certificate from another CA: %d", resp.StatusCode)
		}
	}
}
