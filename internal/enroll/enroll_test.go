package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

func TestEnrollCreatesMachineAndServesMTLS(t *testing.T) {
	e := newEnv(t)
	tok := e.token(TokenRequest{Profile: "worker", Labels: map[string]string{"rack": "r7"}})
	a := e.newAgent()
	code, resp, msg := e.enroll(a, tok, facts("52:54:00:00:00:01", "hostname", "web-1", "memory_mb", 16384))
	if code != http.StatusOK {
		t.Fatalf("enroll: %d %s", code, msg)
	}
	if resp.Machine != "web-1" {
		t.Fatalf("machine %q, want web-1 (the reported hostname)", resp.Machine)
	}
	c := a.cert.Leaf
	if c.Subject.CommonName != "web-1" || len(c.DNSNames) != 1 || c.DNSNames[0] != "web-1" {
		t.Fatalf("certificate names: CN %q, DNS %v", c.Subject.CommonName, c.DNSNames)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life < 24*time.Hour || life > 24*time.Hour+10*time.Minute {
		t.Fatalf("certificate lifetime %s, want about 24h", life)
	}
	if resp.CAFingerprint != e.srv.CAFingerprint() || !strings.Contains(resp.CAChain, "BEGIN CERTIFICATE") {
		t.Fatalf("CA in response: %q", resp.CAFingerprint)
	}
	if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("ext key usage %v, want client auth only", c.ExtKeyUsage)
	}
	m := e.machine("web-1")
	spec, _ := resource.Typed[resource.MachineSpec](m)
	if spec.Profile != "worker" || len(spec.Interfaces) != 1 || spec.Interfaces[0].MAC != "52:54:00:00:00:01" || spec.Interfaces[0].Name != "eth0" {
		t.Fatalf("machine spec %+v", spec)
	}
	if m.Metadata.Labels["rack"] != "r7" {
		t.Fatalf("labels %v", m.Metadata.Labels)
	}
	cs := machineCertStatus(m)
	if cs.CertFingerprint != Fingerprint(c.Raw) || cs.State != resource.StateNew {
		t.Fatalf("status %+v", cs)
	}
	if e.tokenUses(tokenID(t, tok)) != 1 {
		t.Fatal("token use not counted")
	}
	if n := len(e.auditEntries("enroll")); n != 1 {
		t.Fatalf("%d enroll audit entries", n)
	}
	evs := e.events("web-1")
	if len(evs) == 0 || evs[len(evs)-1].Type != "Enrolled" {
		t.Fatalf("events %v", evs)
	}
	// One mTLS call as the machine.
	code, body := e.get(a.http, "/agent/v1/self")
	if code != http.StatusOK {
		t.Fatalf("self: %d %s", code, body)
	}
	var self AgentSelf
	json.Unmarshal(body, &self)
	if self.Machine != "web-1" || self.Profile != "worker" || self.Labels["rack"] != "r7" {
		t.Fatalf("self %+v", self)
	}
	// The CA is published for pinning.
	code, body = e.get(a.http, "/ca.crt")
	b, _ := pem.Decode(body)
	if code != http.StatusOK || b == nil || Fingerprint(b.Bytes) != e.srv.CAFingerprint() {
		t.Fatalf("ca.crt: %d", code)
	}
}

func TestEnrollBindsExistingMachineByMAC(t *testing.T) {
	e := newEnv(t)
	e.createMachine("node-3", "worker", "52:54:00:00:00:03", resource.StateProvisioning)
	a := e.newAgent()
	code, resp, msg := e.enroll(a, e.token(TokenRequest{}), facts("52:54:00:00:00:03", "hostname", "whatever"))
	if code != http.StatusOK || resp.Machine != "node-3" {
		t.Fatalf("enroll: %d %s %+v", code, msg, resp)
	}
	if st := machineCertStatus(e.machine("node-3")).State; st != resource.StateProvisioning {
		t.Fatalf("state changed to %q", st)
	}
	// A generic token does not take over an enrolled machine...
	b := e.newAgent()
	code, _, msg = e.enroll(b, e.token(TokenRequest{}), facts("52:54:00:00:00:03"))
	if code != http.StatusForbidden {
		t.Fatalf("second enrollment with a generic token: %d %s", code, msg)
	}
	mustContain(t, "refusal", msg, "already enrolled")
	// ...nor does a token for it while the machine holds a valid certificate and no
	// operator reprovisioned it since (issue 13)...
	code, _, msg = e.enroll(b, e.token(TokenRequest{Machine: "node-3"}), facts("52:54:00:00:00:03"))
	if code != http.StatusForbidden {
		t.Fatalf("re-enrollment without a reprovision: %d %s", code, msg)
	}
	mustContain(t, "refusal", msg, "reprovision")
	// ...after a reprovision, a token for it does (once), and the old certificate
	// stops working.
	e.clock.Advance(time.Second)
	e.startWorkflow("node-3")
	code, _, msg = e.enroll(b, e.token(TokenRequest{Machine: "node-3"}), facts("52:54:00:00:00:03"))
	if code != http.StatusOK {
		t.Fatalf("re-enrollment: %d %s", code, msg)
	}
	if code, body := e.get(a.http, "/agent/v1/self"); code != http.StatusUnauthorized {
		t.Fatalf("old certificate after re-enrollment: %d %s", code, body)
	}
	if code, _ := e.get(b.http, "/agent/v1/self"); code != http.StatusOK {
		t.Fatalf("new certificate: %d", code)
	}
	// One reprovision grants one re-enrollment: a second token for it is refused.
	if code, _, msg := e.enroll(e.newAgent(), e.token(TokenRequest{Machine: "node-3"}), facts("52:54:00:00:00:03")); code != http.StatusForbidden {
		t.Fatalf("second re-enrollment within one reprovision: %d %s", code, msg)
	}
}

// Each bad input is refused with a clear reason and an audit entry; nothing is
// issued (no machine, no key record) and no token use is consumed.
func TestEnrollBadInput(t *testing.T) {
	e := newEnv(t)
	// Each case's refusal is the first of its interval (repeats of one reason from
	// one source are aggregated: TestRefusalsAggregated).
	e.srv.RefusalInterval = time.Second
	signed := func(c *Claims) string {
		tok, err := signToken(e.srv.ca.tokenKey, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	goodFacts := facts("52:54:00:aa:00:01")

	type input struct {
		token string
		csr   string
		body  []byte
		facts map[string]any
	}
	key := func() *ecdsa.PrivateKey {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return k
	}
	csrWith := func(tmpl *x509.CertificateRequest) string { return csrPEM(t, tmpl, key()) }
	weakRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	badSig := func() string {
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key())
		der[len(der)-3] ^= 0xff
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	caExt := func() string {
		v, _ := asn1.Marshal(struct{ IsCA bool }{true})
		return csrWith(&x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: v}}})
	}
	tampered := func() string {
		tok := e.token(TokenRequest{})
		parts := strings.Split(tok, ".")
		claims, _ := b64.DecodeString(parts[1])
		claims = []byte(strings.Replace(string(claims), `"profile":"worker"`, `"profile":"db"`, 1))
		return parts[0] + "." + b64.EncodeToString(claims) + "." + parts[2]
	}
	algNone := func() string {
		parts := strings.Split(e.token(TokenRequest{}), ".")
		return b64.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	}
	revoked := func() string {
		tok := e.token(TokenRequest{})
		if err := e.srv.RevokeToken(e.ctx, "token:test", tokenID(t, tok)); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	deleted := func() string {
		tok := e.token(TokenRequest{})
		e.st.Update(e.ctx, func(tx store.Tx) error { return tx.Delete(e.ctx, "JoinToken", tokenID(t, tok), "") })
		return tok
	}
	// used and replay need a first, successful enrollment; they return the token and
	// the request to repeat.
	usedUp := func() (string, string) {
		tok := e.token(TokenRequest{})
		if code, _, msg := e.enroll(e.newAgent(), tok, facts("52:54:00:bb:00:01")); code != http.StatusOK {
			t.Fatalf("first use: %d %s", code, msg)
		}
		return tok, ""
	}
	replay := func() (string, string) {
		tok := e.token(TokenRequest{MaxUses: 5})
		csr := csrPEM(t, nil, key())
		a := e.newAgent()
		if code, _, msg := e.enrollCSR(a, tok, csr, map[string]any{}); code != http.StatusOK {
			t.Fatalf("first use: %d %s", code, msg)
		}
		return tok, csr
	}

	cases := []struct {
		name   string
		make   func() input
		status int
		reason string
	}{
		{"expired token", func() input {
			return input{token: signed(&Claims{ID: "jt-expired", IssuedAt: now.Add(-2 * time.Hour).Unix(), Expires: now.Add(-time.Hour).Unix(), Scope: Scope{Profile: "worker"}})}
		}, 401, "expired at"},
		{"not-yet-valid token", func() input {
			return input{token: signed(&Claims{ID: "jt-future", NotBefore: now.Add(time.Hour).Unix(), Expires: now.Add(2 * time.Hour).Unix(), Scope: Scope{Profile: "worker"}})}
		}, 401, "not valid before"},
		{"tampered token", func() input { return input{token: tampered()} }, 401, "signature does not verify"},
		{"token of another key", func() input {
			tok, _ := signToken(otherKey, &Claims{ID: "jt-other", Expires: now.Add(time.Hour).Unix(), Scope: Scope{Profile: "worker"}})
			return input{token: tok}
		}, 401, "signature does not verify"},
		{"alg none", func() input { return input{token: algNone()} }, 401, "algorithm \"none\""},
		{"garbage token", func() input { return input{token: "not.a.jwt.at-all"} }, 401, "malformed"},
		{"revoked token", func() input { return input{token: revoked()} }, 401, "revoked"},
		{"deleted token", func() input { return input{token: deleted()} }, 401, "unknown to this Kiln"},
		{"used-up token", func() input { tok, _ := usedUp(); return input{token: tok} }, 401, "used up (1 of 1 uses)"},
		{"replayed enrollment", func() input { tok, csr := replay(); return input{token: tok, csr: csr, facts: map[string]any{}} }, 409, "replayed enrollment"},
		{"outside its CIDR", func() input { return input{token: e.token(TokenRequest{CIDRs: []string{"10.0.0.0/8"}})} }, 403, "may only be used from 10.0.0.0/8; this request comes from 127.0.0.1"},
		{"another MAC", func() input { return input{token: e.token(TokenRequest{MACs: []string{"52:54:00:ff:ff:ff"}})} }, 403, "is for MAC 52:54:00:ff:ff:ff; the machine reported 52:54:00:aa:00:01"},
		{"MAC-bound token, no MAC reported", func() input {
			return input{token: e.token(TokenRequest{MACs: []string{"52:54:00:ff:ff:ff"}}), facts: map[string]any{"hostname": "x"}}
		}, 403, "reported no MAC"},
		{"token policy false", func() input {
			return input{token: e.token(TokenRequest{Policy: []string{`facts.memory_mb >= 8192 && facts.dmi.vendor == "Dell Inc."`}}),
				facts: facts("52:54:00:aa:00:01", "memory_mb", 4096, "dmi", map[string]any{"vendor": "Dell Inc."})}
		}, 403, "policy: token expression 0 `facts.memory_mb >= 8192 && facts.dmi.vendor == \"Dell Inc.\"` is false"},
		{"token policy on a missing fact", func() input {
			return input{token: e.token(TokenRequest{Policy: []string{`facts.dmi.vendor == "Dell Inc."`}})}
		}, 403, "could not be evaluated on these facts: no such key: dmi"},
		{"profile policy false", func() input {
			return input{token: e.token(TokenRequest{Profile: "big-only"}), facts: facts("52:54:00:aa:00:01", "memory_mb", 1024)}
		}, 403, "policy: profile \"big-only\" expression 0 `facts.memory_mb >= 65536` is false"},
		{"CSR with extra SANs", func() input {
			return input{csr: csrWith(&x509.CertificateRequest{DNSNames: []string{"m-525400aa0001", "evil.example"}})}
		}, 400, "2 DNS SANs"},
		{"CSR with an IP SAN", func() input {
			return input{csr: csrWith(&x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}})}
		}, 400, "SANs other than the machine's DNS name"},
		{"CSR with another CN", func() input {
			return input{csr: csrWith(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "db-1"}})}
		}, 400, "subject CN \"db-1\" is not the name Kiln assigns (\"m-525400aa0001\")"},
		{"CSR with an organization", func() input {
			return input{csr: csrWith(&x509.CertificateRequest{Subject: pkix.Name{Organization: []string{"system:masters"}}})}
		}, 400, "subject attribute 2.5.4.10 is not allowed"},
		{"CSR asking to be a CA", func() input { return input{csr: caExt()} }, 400, "requests extension 2.5.29.19"},
		{"CSR with a weak RSA key", func() input { return input{csr: csrPEM(t, nil, weakRSA)} }, 400, "weak key: RSA 1024 bits"},
		{"CSR on P-224", func() input { return input{csr: csrPEM(t, nil, p224)} }, 400, "ECDSA on P-224"},
		{"CSR with a bad signature", func() input { return input{csr: badSig()} }, 400, "signature does not verify"},
		{"CSR bound to another connection", func() input {
			other := make([]byte, 32)
			rand.Read(other)
			csr, err := agentwire.ChannelBoundCSR(key(), other)
			if err != nil {
				t.Fatal(err)
			}
			return input{csr: csr}
		}, 400, "channel binding is not that of this connection"},
		{"CSR with a password", func() input { return input{csr: opensslCSR(t, "challengePassword = hunter2")} }, 400, "Kiln takes no passwords in CSRs"},
		{"CSR with another attribute", func() input { return input{csr: opensslCSR(t, "unstructuredName = rack 7")} }, 400, "attribute 1.2.840.113549.1.9.2 is not allowed"},
		{"CSR not PEM", func() input { return input{csr: "hello"} }, 400, "csr: not PEM"},
		{"oversized body", func() input {
			return input{body: []byte(`{"csr":"` + strings.Repeat("A", DefaultMaxBodyBytes+10) + `"}`)}
		}, 413, "larger than 1048576 bytes"},
		{"malformed JSON", func() input { return input{body: []byte(`{"token": 5}`)} }, 400, "malformed JSON"},
		{"unknown field", func() input { return input{body: []byte(`{"csr":"x","admin":true}`)} }, 400, "unknown field"},
		{"no token", func() input { return input{body: []byte(`{"csr":"x"}`)} }, 401, "registration by MAC alone is switched off"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.make()
			body := in.body
			if body == nil {
				if in.token == "" {
					in.token = e.token(TokenRequest{})
				}
				if in.csr == "" {
					in.csr = csrWith(nil)
				}
				if in.facts == nil {
					in.facts = goodFacts
				}
				body, _ = json.Marshal(EnrollRequest{Token: in.token, CSR: in.csr, Facts: in.facts})
			}
			var id string
			if in.token != "" && strings.HasPrefix(in.token, "eyJ") {
				id = tokenID(t, in.token)
			}
			usesBefore := -1
			if id != "" && e.count("JoinToken") > 0 {
				var o *resource.Object
				e.st.View(e.ctx, func(tx store.Tx) error { o, _ = tx.Get(e.ctx, "JoinToken", id); return nil })
				if o != nil {
					usesBefore = tokenInfo(o).Uses
				}
			}
			machines, keys := e.count("Machine"), e.count(enrollKeyKind)
			refusalsBefore := len(e.auditEntries("enroll-refused"))
			e.clock.Advance(time.Second)

			code, data := e.post(e.newAgent().http, "/enroll", body)
			var er ErrorResponse
			json.Unmarshal(data, &er)
			if code != tc.status {
				t.Fatalf("status %d (%s), want %d", code, er.Error, tc.status)
			}
			mustContain(t, "reason", er.Error, tc.reason)
			if strings.Contains(er.Error, "eyJ") {
				t.Fatal("the reason shows the token")
			}
			ref := e.auditEntries("enroll-refused")
			if len(ref) != refusalsBefore+1 {
				t.Fatalf("%d new enroll-refused audit entries, want 1", len(ref)-refusalsBefore)
			}
			last := ref[len(ref)-1]
			mustContain(t, "audit summary", last.Summary, tc.reason)
			if strings.Contains(last.Summary, "eyJ") {
				t.Fatal("the audit entry holds the token")
			}
			if n := e.count("Machine"); n != machines {
				t.Fatalf("machines: %d -> %d", machines, n)
			}
			if n := e.count(enrollKeyKind); n != keys {
				t.Fatalf("enrolled keys: %d -> %d (a certificate was issued)", keys, n)
			}
			if usesBefore >= 0 {
				if u := e.tokenUses(id); u != usesBefore {
					t.Fatalf("token uses %d -> %d", usesBefore, u)
				}
			}
		})
	}
}

// opensslCSR is a CSR made by openssl req for a new P-256 key, with CN m-525400aa0001
// (the name TestEnrollBadInput's machine gets; openssl writes attributes only with a
// subject from its configuration) and the given request attribute.
func opensslCSR(t *testing.T, attribute string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := "[req]\nprompt = no\ndistinguished_name = dn\nattributes = attrs\n[dn]\nCN = m-525400aa0001\n[attrs]\n" + attribute + "\n"
	if err := os.WriteFile(filepath.Join(dir, "req.cnf"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", filepath.Join(dir, "key.pem"), "-config", filepath.Join(dir, "req.cnf"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl req: %v", err)
	}
	return string(out)
}

func TestEnrollOverPlainHTTPRefused(t *testing.T) {
	e := newEnv(t)
	body, _ := json.Marshal(EnrollRequest{Token: e.token(TokenRequest{}), CSR: csrPEM(t, nil, e.newAgent().key)})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/enroll", strings.NewReader(string(body)))
	e.srv.handleEnroll(rec, req)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "HTTPS only") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if len(e.auditEntries("enroll-refused")) != 1 {
		t.Fatal("no audit entry")
	}
}

// N uses means N, whatever the concurrency.
func TestTokenUsesAreAtomic(t *testing.T) {
	e := newEnv(t)
	const uses, tries = 5, 24
	tok := e.token(TokenRequest{MaxUses: uses})
	ok := concurrentEnrollments(t, []*Server{e.srv}, tok, tries)
	if ok != uses {
		t.Fatalf("%d enrollments succeeded, want %d", ok, uses)
	}
	if u := e.tokenUses(tokenID(t, tok)); u != uses {
		t.Fatalf("token uses %d, want %d", u, uses)
	}
	if n := e.count("Machine"); n != uses {
		t.Fatalf("%d machines, want %d", n, uses)
	}
}

// concurrentEnrollments runs tries enrollments with tok at once, spread over servers,
// and returns how many succeeded; every failure must be "used up".
func concurrentEnrollments(t *testing.T, servers []*Server, tok string, tries int) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	okCount := 0
	start := make(chan struct{})
	for i := 0; i < tries; i++ {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr := csrPEM(t, nil, key)
		srv := servers[i%len(servers)]
		mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x10, byte(i >> 8), byte(i)}.String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := srv.Enroll(t.Context(), &EnrollRequest{Token: tok, CSR: csr, Facts: facts(mac)}, netip.MustParseAddr("127.0.0.1"))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				okCount++
				return
			}
			if !strings.Contains(err.Error(), "used up") {
				t.Errorf("enrollment failed otherwise: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return okCount
}

func TestRenewal(t *testing.T) {
	e := newEnv(t)
	a := e.newAgent()
	if code, _, msg := e.enroll(a, e.token(TokenRequest{}), facts("52:54:00:00:00:21")); code != http.StatusOK {
		t.Fatal(code, msg)
	}
	old := *a
	// The renewing agent makes a new key.
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	body, _ := json.Marshal(RenewRequest{CSR: csrPEM(t, nil, newKey)})
	code, data := e.post(a.http, "/agent/v1/renew", body)
	if code != http.StatusOK {
		t.Fatalf("renew: %d %s", code, data)
	}
	var resp EnrollResponse
	json.Unmarshal(data, &resp)
	renewed := &agentClient{key: newKey, http: a.http}
	renewed.adopt(t, &resp)
	if renewed.cert.Leaf.Subject.CommonName != old.cert.Leaf.Subject.CommonName {
		t.Fatal("renewal changed the name")
	}
	if want := renewed.cert.Leaf.NotBefore.Add(renewed.cert.Leaf.NotAfter.Sub(renewed.cert.Leaf.NotBefore) * 2 / 3); resp.RenewAfter.Sub(want).Abs() > 10*time.Minute {
		t.Fatalf("renewAfter %s, want about %s (2/3 of the lifetime)", resp.RenewAfter, want)
	}
	if code, _ := e.get(renewed.http, "/agent/v1/self"); code != http.StatusOK {
		t.Fatalf("renewed certificate: %d", code)
	}
	oldClient := &agentClient{key: old.key, cert: old.cert}
	oldClient.setClient(e.srv.CACertPool())
	if code, body := e.get(oldClient.http, "/agent/v1/self"); code != http.StatusUnauthorized || !strings.Contains(string(body), "replaced by a renewal") {
		t.Fatalf("old certificate after renewal: %d %s", code, body)
	}
	// Renewing again with the old certificate fails.
	if code, _ := e.post(oldClient.http, "/agent/v1/renew", body); code != http.StatusUnauthorized {
		t.Fatalf("second renewal with the old certificate: %d", code)
	}
	// A renewal CSR asking for another name is refused.
	body, _ = json.Marshal(RenewRequest{CSR: csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "other"}}, newKey)})
	if code, data := e.post(renewed.http, "/agent/v1/renew", body); code != http.StatusBadRequest {
		t.Fatalf("renewal for another name: %d %s", code, data)
	}
	if len(e.auditEntries("renew")) != 1 || len(e.auditEntries("renew-refused")) != 1 {
		t.Fatal("renewal audit entries missing")
	}
}

func TestRevocationAndCRL(t *testing.T) {
	e := newEnv(t)
	a := e.newAgent()
	if code, _, msg := e.enroll(a, e.token(TokenRequest{}), facts("52:54:00:00:00:31", "hostname", "rev-1")); code != http.StatusOK {
		t.Fatal(code, msg)
	}
	serial := a.cert.Leaf.SerialNumber
	res, err := e.srv.RevokeMachine(e.ctx, "token:admin", "rev-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Serials) != 1 || res.Serials[0] != hex.EncodeToString(serial.Bytes()) {
		t.Fatalf("revoked %v", res.Serials)
	}
	code, body := e.get(a.http, "/agent/v1/self")
	if code != http.StatusUnauthorized || !strings.Contains(string(body), "no longer valid") {
		t.Fatalf("revoked certificate: %d %s", code, body)
	}
	if len(e.auditEntries("revoke-cert")) != 1 || len(e.auditEntries("agent-refused")) != 1 {
		t.Fatal("revocation audit entries missing")
	}
	code, der := e.get(a.http, "/crl")
	if code != http.StatusOK {
		t.Fatalf("crl: %d", code)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(e.srv.ca.cert); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	found := false
	for _, r := range crl.RevokedCertificateEntries {
		found = found || r.SerialNumber.Cmp(serial) == 0
	}
	if !found {
		t.Fatal("the revoked serial is not in the CRL")
	}
	// Revoking again: nothing left to revoke.
	if _, err := e.srv.RevokeMachine(e.ctx, "token:admin", "rev-1"); err == nil || statusForError(err) != http.StatusUnprocessableEntity {
		t.Fatalf("second revocation: %v", err)
	}
	// The machine enrolls again with a token for it.
	b := e.newAgent()
	if code, _, msg := e.enroll(b, e.token(TokenRequest{Machine: "rev-1"}), facts("52:54:00:00:00:31")); code != http.StatusOK {
		t.Fatal(code, msg)
	}
	if code, _ := e.get(b.http, "/agent/v1/self"); code != http.StatusOK {
		t.Fatalf("after re-enrollment: %d", code)
	}
}

func TestCrossMachineAccessForbidden(t *testing.T) {
	e := newEnv(t)
	a, b := e.newAgent(), e.newAgent()
	e.enroll(a, e.token(TokenRequest{}), facts("52:54:00:00:00:41", "hostname", "alpha"))
	e.enroll(b, e.token(TokenRequest{}), facts("52:54:00:00:00:42", "hostname", "beta"))
	if code, _ := e.get(a.http, "/agent/v1/machines/alpha"); code != http.StatusOK {
		t.Fatalf("own record: %d", code)
	}
	code, body := e.get(a.http, "/agent/v1/machines/beta")
	if code != http.StatusForbidden || !strings.Contains(string(body), "machine alpha may not read the record of machine beta") {
		t.Fatalf("another machine's record: %d %s", code, body)
	}
	denied := e.auditEntries("access-denied")
	if len(denied) != 1 || denied[0].Actor != "machine:alpha" || denied[0].Name != "beta" {
		t.Fatalf("audit %+v", denied)
	}
	found := false
	for _, ev := range e.events("alpha") {
		found = found || ev.Type == "AgentForbidden"
	}
	if !found {
		t.Fatal("no AgentForbidden event on the asking machine")
	}
}

func TestAgentAPIRefusesOtherCertificates(t *testing.T) {
	e := newEnv(t)
	a := e.newAgent()
	e.enroll(a, e.token(TokenRequest{}), facts("52:54:00:00:00:51", "hostname", "gamma"))

	// A certificate for the same machine name from another CA.
	otherCA, otherKey := selfSignedCA(t, "Evil CA", nil, nil)
	forged, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "gamma"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		otherCA, a.key.Public(), otherKey)
	c, _ := x509.ParseCertificate(forged)
	evil := &agentClient{key: a.key}
	evil.setClient(e.srv.CACertPool())
	// A Go client only offers a certificate that matches the server's acceptable-CA
	// hint; an attacker sends it anyway.
	evilCert := &tls.Certificate{Certificate: [][]byte{forged}, PrivateKey: a.key, Leaf: c}
	evil.http.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return evilCert, nil
	}
	code, body := e.get(evil.http, "/agent/v1/self")
	if code != http.StatusUnauthorized || !strings.Contains(string(body), "not issued by this Kiln's CA") {
		t.Fatalf("certificate of another CA: %d %s", code, body)
	}
	// No certificate at all.
	anon := e.newAgent()
	if code, body := e.get(anon.http, "/agent/v1/self"); code != http.StatusUnauthorized || !strings.Contains(string(body), "no client certificate") {
		t.Fatalf("no certificate: %d %s", code, body)
	}
	// The server's own certificate is not a client certificate.
	srvCert, _ := e.srv.certs.get(nil)
	impostor := &agentClient{key: srvCert.PrivateKey.(*ecdsa.PrivateKey)}
	impostor.cert = srvCert
	impostor.setClient(e.srv.CACertPool())
	if code, body := e.get(impostor.http, "/agent/v1/self"); code != http.StatusUnauthorized || !strings.Contains(string(body), "not a client certificate") {
		t.Fatalf("server certificate as client certificate: %d %s", code, body)
	}
	if n := len(e.auditEntries("agent-refused")); n != 3 {
		t.Fatalf("%d agent-refused audit entries, want 3", n)
	}
}

func TestBootToken(t *testing.T) {
	e := newEnv(t)
	e.createMachine("pxe-1", "worker", "52:54:00:00:00:61", resource.StateNew)
	e.lease("127.0.0.1", "52:54:00:00:00:61", e.clock.Now().Add(time.Hour))
	e.startWorkflow("pxe-1")
	line, err := e.srv.BootCmdline(e.ctx, "pxe-1", "52-54-00-00-00-61", netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	// Linux keeps 2048 bytes of command line on x86 (COMMAND_LINE_SIZE); the
	// profile's own parameters need room too.
	if len(line) > 700 {
		t.Fatalf("boot credentials take %d bytes of the kernel command line", len(line))
	}
	f := map[string]string{}
	for _, kv := range strings.Fields(line) {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = v
	}
	if f[CmdlineServer] != "https://127.0.0.1:1" || f[CmdlineCA] != e.srv.CAFingerprint() || f[CmdlineToken] == "" {
		t.Fatalf("cmdline %q", line)
	}
	tok := f[CmdlineToken]
	claims, err := parseToken(e.srv.ca.tokenPub, tok)
	if err != nil {
		t.Fatal(err)
	}
	if !claims.Scope.Boot || claims.Scope.Machine != "pxe-1" || claims.Expires-claims.IssuedAt != int64(DefaultBootTokenTTL/time.Second) {
		t.Fatalf("claims %+v", claims)
	}
	// Another MAC cannot use it.
	intruder := e.newAgent()
	if code, _, msg := e.enroll(intruder, tok, facts("52:54:00:00:00:99")); code != http.StatusForbidden {
		t.Fatalf("other MAC: %d %s", code, msg)
	}
	// The machine enrolls; someone who raced it would be refused with an alert.
	a := e.newAgent()
	if code, resp, msg := e.enroll(a, tok, facts("52:54:00:00:00:61")); code != http.StatusOK || resp.Machine != "pxe-1" {
		t.Fatal(code, msg)
	}
	b := e.newAgent()
	code, _, msg := e.enroll(b, tok, facts("52:54:00:00:00:61"))
	if code != http.StatusUnauthorized {
		t.Fatalf("second use: %d %s", code, msg)
	}
	mustContain(t, "second use", msg, "was already used (by pxe-1")
	alerts := e.auditEntries("enroll-alert")
	if len(alerts) != 1 || alerts[0].Name != "pxe-1" {
		t.Fatalf("alert audit entries %+v", alerts)
	}
	found := false
	for _, ev := range e.events("pxe-1") {
		found = found || ev.Type == "EnrollAlert"
	}
	if !found {
		t.Fatal("no EnrollAlert event")
	}
	// A new reprovision supersedes the previous one's token.
	e.clock.Advance(time.Second)
	e.startWorkflow("pxe-1")
	tok2, err := e.srv.MintBootToken(e.ctx, "pxe-1", "52:54:00:00:00:61", netip.MustParseAddr("127.0.0.1"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if e.count("JoinToken") != 1 {
		t.Fatal("per-boot tokens pile up")
	}
	e.clock.Advance(time.Second)
	e.startWorkflow("pxe-1") // the next reprovision
	if _, err := e.srv.MintBootToken(e.ctx, "pxe-1", "52:54:00:00:00:61", netip.MustParseAddr("127.0.0.1"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if code, _, msg := e.enroll(e.newAgent(), tok2, facts("52:54:00:00:00:61")); code != http.StatusUnauthorized || !strings.Contains(msg, "superseded") {
		t.Fatalf("superseded boot token: %d %s", code, msg)
	}
}

func TestRegisterByMAC(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RegisterByMAC = true })
	e.createMachine("mac-1", "worker", "52:54:00:00:00:71", resource.StateProvisioning)
	e.createMachine("mac-2", "worker", "52:54:00:00:00:72", resource.StateProvisioned)
	a := e.newAgent()
	if code, resp, msg := e.enroll(a, "", facts("52:54:00:00:00:71")); code != http.StatusOK || resp.Machine != "mac-1" {
		t.Fatal(code, msg)
	}
	// Enrolled, it is not enrolled again on its MAC: it renews, or is reprovisioned.
	if code, _, msg := e.enroll(e.newAgent(), "", facts("52:54:00:00:00:71")); code != http.StatusForbidden || !strings.Contains(msg, "already enrolled") {
		t.Fatalf("second registration by MAC: %d %s", code, msg)
	}
	if code, _, msg := e.enroll(e.newAgent(), "", facts("52:54:00:00:00:72")); code != http.StatusForbidden || !strings.Contains(msg, "not provisioning") {
		t.Fatal(code, msg)
	}
	if code, _, msg := e.enroll(e.newAgent(), "", facts("52:54:00:00:00:73")); code != http.StatusForbidden || !strings.Contains(msg, "no machine has") {
		t.Fatal(code, msg)
	}
}

type stubScripts struct{}

func (stubScripts) ScriptForMachine(_ context.Context, _ *http.Request, m *resource.Object) (string, error) {
	return "#!ipxe\necho script for " + m.Metadata.Name + "\n", nil
}

func TestBootByClientCertificateWithCurl(t *testing.T) {
	curl := testkit.NeedTool(t, "curl", "curl")
	e := newEnv(t)
	e.srv.Scripts = stubScripts{}
	url := serveHTTPS(t, e.srv, nil)
	e.createMachine("ipxe-1", "worker", "52:54:00:00:00:81", resource.StateProvisioning)
	e.createMachine("ipxe-2", "worker", "52:54:00:00:00:82", resource.StateProvisioning)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bc1, err := e.srv.ExportBootCert(e.ctx, "token:admin", "ipxe-1", BootCertRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(bc1.Key, "PRIVATE KEY") || bc1.Fingerprint == "" {
		t.Fatal("boot cert export incomplete")
	}
	bc2, _ := e.srv.ExportBootCert(e.ctx, "token:admin", "ipxe-2", BootCertRequest{KeyType: "ecdsa"})
	ca := write("ca.crt", bc1.CA)
	run := func(args ...string) (int, string) {
		t.Helper()
		args = append([]string{"-sS", "--cacert", ca, "-o", "-", "-w", "\n%{http_code}"}, args...)
		out, err := exec.Command(curl, append(args, url+"/ipxe/by-cert")...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		s := strings.TrimSpace(string(out))
		i := strings.LastIndex(s, "\n")
		code, _ := strconv.Atoi(s[i+1:])
		return code, s[:i+1]
	}
	code, body := run("--cert", write("1.crt", bc1.Certificate), "--key", write("1.key", bc1.Key))
	if code != 200 || !strings.Contains(body, "script for ipxe-1") {
		t.Fatalf("machine 1: %d %s", code, body)
	}
	code, body = run("--cert", write("2.crt", bc2.Certificate), "--key", write("2.key", bc2.Key))
	if code != 200 || !strings.Contains(body, "script for ipxe-2") {
		t.Fatalf("machine 2: %d %s", code, body)
	}
	code, body = run()
	if code != 401 || !strings.Contains(body, "needs HTTPS with the machine's boot client certificate") {
		t.Fatalf("no certificate: %d %s", code, body)
	}
	// An agent certificate is not a boot certificate.
	a := e.newAgent()
	e.enroll(a, e.token(TokenRequest{}), facts("52:54:00:00:00:83"))
	kder, _ := x509.MarshalPKCS8PrivateKey(a.key)
	code, body = run("--cert", write("a.crt", certPEM(a.cert.Leaf.Raw)), "--key", write("a.key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))))
	if code != 403 || !strings.Contains(body, "not a boot certificate") {
		t.Fatalf("agent certificate: %d %s", code, body)
	}
	// Revoked.
	if _, err := e.srv.RevokeMachine(e.ctx, "token:admin", "ipxe-1"); err != nil {
		t.Fatal(err)
	}
	code, body = run("--cert", filepath.Join(dir, "1.crt"), "--key", filepath.Join(dir, "1.key"))
	if code != 403 || !strings.Contains(body, "is revoked") {
		t.Fatalf("revoked boot certificate: %d %s", code, body)
	}
	if len(e.auditEntries("boot-by-cert-refused")) != 3 {
		t.Fatal("refusals not audited")
	}
}

func TestPublishedFingerprintMatchesPEM(t *testing.T) {
	e := newEnv(t)
	b, _ := pem.Decode(e.srv.CACertificatePEM())
	sum := sha256.Sum256(b.Bytes)
	if hex.EncodeToString(sum[:]) != e.srv.CAFingerprint() {
		t.Fatal("fingerprint is not the SHA-256 of the CA certificate's DER")
	}
	res, err := http.Get(serveHTTPPlain(t, e.srv) + "/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.Header.Get("X-Kiln-CA-Fingerprint") != "sha256:"+e.srv.CAFingerprint() || string(data) != string(e.srv.CACertificatePEM()) {
		t.Fatal("/ca.crt over plain HTTP")
	}
}

func serveHTTPPlain(t *testing.T, srv *Server) string {
	mux := http.NewServeMux()
	srv.Register(mux)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts.URL
}
