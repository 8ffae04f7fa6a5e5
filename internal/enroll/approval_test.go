package enroll

import (
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/agent"
	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Enrollment by approval, tried as an attacker would: a pending request gets nothing,
// a denied or expired one nothing, another key or a replayed poll nothing, a MAC
// another machine owns is not taken without the operator naming that machine, and a
// flood of requests is capped.

// withApproval switches on requests without a token and sets small caps.
func withApproval(total, perSource int) envOption {
	return func(c *Config) {
		c.ApprovalWithoutToken = true
		c.MaxPendingEnrollments = total
		c.MaxPendingPerSource = perSource
	}
}

// setProfileSpec creates or replaces a profile.
func (e *env) setProfileSpec(name, spec string) {
	e.t.Helper()
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		o := &resource.Object{Kind: "Profile", Metadata: resource.Metadata{Name: name}, Spec: json.RawMessage(spec)}
		if old, err := tx.Get(e.ctx, "Profile", name); err == nil {
			o.Metadata = old.Metadata
			return tx.Update(e.ctx, o)
		}
		return tx.Create(e.ctx, o)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// requestEnrollment posts an enrollment with a plain CSR for key; a 202 is decoded.
func (e *env) requestEnrollment(key *ecdsa.PrivateKey, tok string, f map[string]any) (int, *agentwire.EnrollPending, string) {
	e.t.Helper()
	body, _ := json.Marshal(EnrollRequest{Token: tok, CSR: csrPEM(e.t, nil, key), Facts: f})
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.srv.CACertPool(), ServerName: "127.0.0.1"}}}
	defer c.CloseIdleConnections()
	code, data := e.post(c, agentwire.EnrollPath, body)
	if code != http.StatusAccepted {
		var er ErrorResponse
		_ = json.Unmarshal(data, &er)
		return code, nil, er.Error
	}
	var p agentwire.EnrollPending
	if err := json.Unmarshal(data, &p); err != nil {
		e.t.Fatal(err)
	}
	return code, &p, ""
}

// pollConn opens a TLS connection to the server and returns it with its channel binding.
func (e *env) pollConn() (*tls.Conn, []byte) {
	e.t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), &tls.Config{RootCAs: e.srv.CACertPool(), ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	if err != nil {
		e.t.Fatal(err)
	}
	st := conn.ConnectionState()
	cb, err := st.ExportKeyingMaterial(ChannelBindingLabel, nil, channelBindingBytes)
	if err != nil {
		e.t.Fatal(err)
	}
	return conn, cb
}

// pollWith sends a poll for id carrying csr on conn; it returns the status and body.
func (e *env) pollWith(conn *tls.Conn, id, csr string) (int, []byte) {
	e.t.Helper()
	c := pollClient(conn)
	defer c.CloseIdleConnections()
	body, _ := json.Marshal(agentwire.EnrollPollRequest{CSR: csr})
	return e.post(c, agentwire.EnrollRequestPath(id), body)
}

// poll polls id with a proof by key on a new connection.
func (e *env) poll(key *ecdsa.PrivateKey, id string) (int, []byte) {
	e.t.Helper()
	conn, cb := e.pollConn()
	csr, err := agentwire.ChannelBoundCSR(key, cb)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.pollWith(conn, id, csr)
}

func (e *env) enrollmentSpec(id string) *resource.EnrollmentSpec {
	e.t.Helper()
	s, err := resource.Typed[resource.EnrollmentSpec](e.object("Enrollment", id))
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := newP256()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const gatedProfile = `{"boot":{"agent":true},"enrollment":"approve"}`

// pendingRequest sets up the gated profile, then asks with a new key and a token
// (req, on the gated profile) for enrollment with facts f; the request must wait
// for approval.
func (e *env) pendingRequest(req TokenRequest, f map[string]any) (*ecdsa.PrivateKey, *agentwire.EnrollPending) {
	e.t.Helper()
	e.setProfileSpec("gated", gatedProfile)
	req.Profile = "gated"
	key := newKey(e.t)
	_, p, msg := e.requestEnrollment(key, e.token(req), f)
	if p == nil {
		e.t.Fatal(msg)
	}
	return key, p
}

func TestApprovalPendingGetsNoCertificate(t *testing.T) {
	e := newEnv(t)
	e.setProfileSpec("gated", gatedProfile)
	tok := e.token(TokenRequest{Profile: "gated"})
	key := newKey(t)
	code, p, msg := e.requestEnrollment(key, tok, facts("52:54:00:aa:00:01", "hostname", "gated-1"))
	if code != http.StatusAccepted {
		t.Fatalf("enroll on an approve profile: %d %s, want 202", code, msg)
	}
	if p.State != agentwire.EnrollmentPending || p.PollPath != agentwire.EnrollRequestPath(p.ID) {
		t.Fatalf("pending answer %+v", p)
	}
	if n := e.count("Machine"); n != 0 {
		t.Fatalf("%d machines exist after a pending enrollment, want 0", n)
	}
	if n := e.tokenUses(tokenID(t, tok)); n != 0 {
		t.Fatalf("token uses %d after a pending enrollment, want 0", n)
	}
	code, body := e.poll(key, p.ID)
	if code != http.StatusAccepted {
		t.Fatalf("poll of a pending request: %d %s, want 202", code, body)
	}
	if strings.Contains(string(body), "CERTIFICATE") {
		t.Fatalf("a pending poll answered a certificate: %s", body)
	}
	s := e.enrollmentSpec(p.ID)
	if s.Source != "127.0.0.1" || s.Hostname != "gated-1" || s.Token != tokenID(t, tok) || len(s.MACs) != 1 {
		t.Fatalf("stored request %+v", s)
	}
}

func TestApprovalApproveIssuesForTheRightMachine(t *testing.T) {
	e := newEnv(t)
	key, p := e.pendingRequest(TokenRequest{}, facts("52:54:00:aa:00:02", "hostname", "gated-2"))
	if _, err := e.srv.ApproveEnrollment(e.ctx, "token:alice", p.ID, ""); err != nil {
		t.Fatal(err)
	}
	code, body := e.poll(key, p.ID)
	if code != http.StatusOK {
		t.Fatalf("poll after approval: %d %s", code, body)
	}
	var resp agentwire.EnrollResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Machine != "gated-2" || !strings.Contains(resp.Certificate, "CERTIFICATE") {
		t.Fatalf("approved enrollment answered %+v", resp)
	}
	ms, _ := resource.Typed[resource.MachineSpec](e.machine("gated-2"))
	if ms.Profile != "gated" || len(ms.Interfaces) != 1 || ms.Interfaces[0].MAC != "52:54:00:aa:00:02" {
		t.Fatalf("machine spec %+v", ms)
	}
	approvals := e.auditEntries("enrollment-approve")
	if len(approvals) != 1 || approvals[0].Actor != "token:alice" || approvals[0].Name != p.ID {
		t.Fatalf("approval audit %+v", approvals)
	}
	evs := e.events("gated-2")
	types := []string{}
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	if !strings.Contains(strings.Join(types, ","), "EnrollmentApproved") || !strings.Contains(strings.Join(types, ","), "Enrolled") {
		t.Fatalf("machine events %v", types)
	}
	// The certificate is collected once: a second poll is a replay.
	if code, body := e.poll(key, p.ID); code == http.StatusOK {
		t.Fatalf("second poll after issue: %d %s", code, body)
	}
}

func TestApprovalDeniedIssuesNothing(t *testing.T) {
	e := newEnv(t)
	key, p := e.pendingRequest(TokenRequest{}, facts("52:54:00:aa:00:03"))
	if _, err := e.srv.DenyEnrollment(e.ctx, "token:bob", p.ID, "unknown host in rack 4"); err != nil {
		t.Fatal(err)
	}
	code, body := e.poll(key, p.ID)
	if code != http.StatusForbidden || !strings.Contains(string(body), "denied") || !strings.Contains(string(body), "unknown host in rack 4") {
		t.Fatalf("poll after deny: %d %s, want 403 with the reason", code, body)
	}
	if n := e.count("Machine"); n != 0 {
		t.Fatalf("%d machines after a denial", n)
	}
	if _, err := e.srv.ApproveEnrollment(e.ctx, "token:alice", p.ID, ""); err == nil {
		t.Fatal("a denied request was approved afterwards")
	}
	if len(e.auditEntries("enrollment-deny")) != 1 {
		t.Fatal("no audit entry for the denial")
	}
}

func TestApprovalPollByAnotherKeyOrReplayRefused(t *testing.T) {
	e := newEnv(t)
	key, p := e.pendingRequest(TokenRequest{}, facts("52:54:00:aa:00:04", "hostname", "gated-4"))
	if _, err := e.srv.ApproveEnrollment(e.ctx, "token:alice", p.ID, ""); err != nil {
		t.Fatal(err)
	}
	// Another host, which saw the id in a listing or on the wire, polls with its own key.
	if code, body := e.poll(newKey(t), p.ID); code != http.StatusForbidden {
		t.Fatalf("poll by another key: %d %s, want 403", code, body)
	}
	// A proof made for one connection, replayed on another.
	connA, cbA := e.pollConn()
	defer connA.Close()
	csrA, err := agentwire.ChannelBoundCSR(key, cbA)
	if err != nil {
		t.Fatal(err)
	}
	connB, _ := e.pollConn()
	if code, body := e.pollWith(connB, p.ID, csrA); code != http.StatusBadRequest && code != http.StatusForbidden {
		t.Fatalf("proof replayed on another connection: %d %s, want a refusal", code, body)
	}
	// A plain CSR of the right key (no channel binding) proves nothing about this connection.
	connC, _ := e.pollConn()
	if code, body := e.pollWith(connC, p.ID, csrPEM(t, nil, key)); code == http.StatusOK {
		t.Fatalf("proof without a channel binding: %d %s", code, body)
	}
	if n := e.count("Machine"); n != 0 {
		t.Fatalf("%d machines after refused polls", n)
	}
	// The requester still collects its certificate.
	if code, body := e.poll(key, p.ID); code != http.StatusOK {
		t.Fatalf("the requester's poll after the attempts: %d %s", code, body)
	}
}

func TestApprovalExpired(t *testing.T) {
	e := newEnv(t)
	key, p := e.pendingRequest(TokenRequest{TTL: "48h"}, facts("52:54:00:aa:00:05"))
	e.clock.Advance(DefaultApprovalTTL + time.Minute)
	if code, body := e.poll(key, p.ID); code != http.StatusGone {
		t.Fatalf("poll of an expired request: %d %s, want 410", code, body)
	}
	if _, err := e.srv.ApproveEnrollment(e.ctx, "token:alice", p.ID, ""); err == nil {
		t.Fatal("an expired request was approved")
	}
	if n := e.count("Machine"); n != 0 {
		t.Fatalf("%d machines after expiry", n)
	}
}

func TestApprovalWithoutTokenMACOfAnotherMachine(t *testing.T) {
	e := newEnv(t, withApproval(100, 5))
	e.createMachine("victim", "worker", "52:54:00:aa:00:06", resource.StateNew)
	key := newKey(t)
	code, p, msg := e.requestEnrollment(key, "", facts("52:54:00:aa:00:06", "hostname", "victim"))
	if code != http.StatusAccepted {
		t.Fatalf("tokenless request: %d %s, want 202", code, msg)
	}
	if p == nil {
		t.Fatal(msg)
	}
	if _, err := e.srv.ApproveEnrollment(e.ctx, "token:alice", p.ID, ""); err == nil || !strings.Contains(err.Error(), "victim") {
		t.Fatalf("approval without --machine of a request reporting victim's MAC: %v, want a refusal naming victim", err)
	}
	if _, err := e.srv.ApproveEnrollment(e.ctx, "token:alice", p.ID, "elsewhere"); err == nil {
		t.Fatal("approval as another machine of a request reporting victim's MAC was accepted")
	}
	if code, body := e.poll(key, p.ID); code != http.StatusAccepted {
		t.Fatalf("poll after refused approvals: %d %s, want 202 (still pending)", code, body)
	}
	// The operator names the machine: that is the decision approval exists for.
	if _, err := e.srv.ApproveEnrollment(e.ctx, "token:alice", p.ID, "victim"); err != nil {
		t.Fatal(err)
	}
	code, body := e.poll(key, p.ID)
	if code != http.StatusOK || !strings.Contains(string(body), `"machine":"victim"`) {
		t.Fatalf("poll after approval as victim: %d %s", code, body)
	}
}

func TestApprovalWithoutTokenOffByDefault(t *testing.T) {
	e := newEnv(t)
	code, _, msg := e.requestEnrollment(newKey(t), "", facts("52:54:00:aa:00:07"))
	if code != http.StatusUnauthorized {
		t.Fatalf("tokenless request with approval without token off: %d %s, want 401", code, msg)
	}
	if n := e.count("Enrollment"); n != 0 {
		t.Fatalf("%d enrollment requests stored", n)
	}
}

func TestApprovalCaps(t *testing.T) {
	e := newEnv(t, withApproval(1000, 2))
	for i := range 2 {
		if code, _, msg := e.requestEnrollment(newKey(t), "", facts("52:54:00:ab:00:0"+string(rune('1'+i)))); code != http.StatusAccepted {
			t.Fatalf("request %d: %d %s", i, code, msg)
		}
	}
	code, _, msg := e.requestEnrollment(newKey(t), "", facts("52:54:00:ab:00:09"))
	if code != http.StatusTooManyRequests {
		t.Fatalf("request over the per-source cap: %d %s, want 429", code, msg)
	}
	// The same key cannot queue twice either.
	e2 := newEnv(t, withApproval(2, 100))
	key := newKey(t)
	if code, _, msg := e2.requestEnrollment(key, "", facts("52:54:00:ac:00:01")); code != http.StatusAccepted {
		t.Fatalf("first request: %d %s", code, msg)
	}
	if code, _, _ := e2.requestEnrollment(key, "", facts("52:54:00:ac:00:01")); code == http.StatusAccepted {
		t.Fatal("a second pending request for the same key was accepted")
	}
	if code, _, msg := e2.requestEnrollment(newKey(t), "", facts("52:54:00:ac:00:02")); code != http.StatusAccepted {
		t.Fatalf("second request: %d %s", code, msg)
	}
	if code, _, msg := e2.requestEnrollment(newKey(t), "", facts("52:54:00:ac:00:03")); code != http.StatusTooManyRequests {
		t.Fatalf("request over the total cap: %d %s, want 429", code, msg)
	}
	// A decision frees a place.
	var id string
	err := e2.st.View(e2.ctx, func(tx store.Tx) error {
		objs, _, err := tx.List(e2.ctx, "Enrollment", store.ListOptions{Limit: 1})
		if len(objs) > 0 {
			id = objs[0].Metadata.Name
		}
		return err
	})
	if err != nil || id == "" {
		t.Fatal(err, id)
	}
	if _, err := e2.srv.DenyEnrollment(e2.ctx, "token:bob", id, ""); err != nil {
		t.Fatal(err)
	}
	if code, _, msg := e2.requestEnrollment(newKey(t), "", facts("52:54:00:ac:00:04")); code != http.StatusAccepted {
		t.Fatalf("request after a denial freed a place: %d %s", code, msg)
	}
}

func TestApprovalFactsBounded(t *testing.T) {
	e := newEnv(t, withApproval(100, 5))
	big := map[string]any{"hostname": strings.Repeat("h", 5000), "blob": strings.Repeat("x", 100_000)}
	for i := range 500 {
		big["k"+strings.Repeat("z", i%50)+string(rune('a'+i%26))] = i
	}
	big["interfaces"] = []any{map[string]any{"mac": "52:54:00:ad:00:01"}}
	code, p, msg := e.requestEnrollment(newKey(t), "", big)
	if code != http.StatusAccepted {
		t.Fatalf("request with large facts: %d %s", code, msg)
	}
	s := e.enrollmentSpec(p.ID)
	raw, _ := json.Marshal(s.Facts)
	if len(raw) > maxStoredFactsBytes || len(s.Hostname) > 253 {
		t.Fatalf("stored facts %d bytes, hostname %d bytes: not bounded", len(raw), len(s.Hostname))
	}
}

// TestTPMEnrollmentWithoutEvidence: an enrollment into a tpm profile without TPM
// evidence is asked for it (202), and nothing is issued or consumed (tpm_test.go
// has the whole exchange with real TPMs).
func TestTPMEnrollmentWithoutEvidence(t *testing.T) {
	e := newEnv(t)
	e.setProfileSpec("tpm-only", `{"boot":{"agent":true},"enrollment":"tpm"}`)
	tok := e.token(TokenRequest{Profile: "tpm-only"})
	code, p, msg := e.requestEnrollment(newKey(t), tok, facts("52:54:00:ae:00:01"))
	if code != http.StatusAccepted || p.State != agentwire.EnrollmentTPMEvidence {
		t.Fatalf("enroll on a tpm profile without TPM evidence: %d %+v %s, want 202 %s", code, p, msg, agentwire.EnrollmentTPMEvidence)
	}
	if e.count("Machine") != 0 || e.tokenUses(tokenID(t, tok)) != 0 {
		t.Fatal("a TPM enrollment without evidence left a machine or used the token")
	}
}

func TestMachineOverrideRequiresApproval(t *testing.T) {
	e := newEnv(t)
	spec, _ := json.Marshal(resource.MachineSpec{Profile: "worker", Enrollment: resource.EnrollApprove,
		Interfaces: []resource.Interface{{MAC: "52:54:00:af:00:01"}}})
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		return tx.Create(e.ctx, &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: "gated-m"}, Spec: spec,
			Status: json.RawMessage(`{"state":"new"}`)})
	})
	if err != nil {
		t.Fatal(err)
	}
	tok := e.token(TokenRequest{Profile: "worker", Machine: "gated-m"})
	code, p, msg := e.requestEnrollment(newKey(t), tok, facts("52:54:00:af:00:01"))
	if code != http.StatusAccepted {
		t.Fatalf("enroll of a machine with enrollment: approve: %d %s, want 202", code, msg)
	}
	if s := e.enrollmentSpec(p.ID); s.RequestedMachine != "gated-m" {
		t.Fatalf("requested machine %q", s.RequestedMachine)
	}
	if cs := machineCertStatus(e.machine("gated-m")); cs.CertFingerprint != "" {
		t.Fatal("the machine got a certificate while its enrollment is pending")
	}
}

// TestAgentWaitsForApproval runs the real agent code: it enrolls, is told to wait,
// polls, and gets its certificate once an operator approves.
func TestAgentWaitsForApproval(t *testing.T) {
	e := newEnv(t)
	e.setProfileSpec("gated", gatedProfile)
	tok := e.token(TokenRequest{Profile: "gated"})
	pending := make(chan agentwire.EnrollPending, 1)
	done := make(chan error, 1)
	var id *agent.Identity
	go func() {
		var err error
		id, err = agent.EnrollSession(e.ctx, agent.EnrollOptions{Server: e.url, CAFingerprint: e.srv.CAFingerprint(), Token: tok,
			Facts: facts("52:54:00:af:00:02", "hostname", "waits-1"), PollInterval: 50 * time.Millisecond,
			OnPending: func(p agentwire.EnrollPending) {
				select {
				case pending <- p:
				default:
				}
			}})
		done <- err
	}()
	var p agentwire.EnrollPending
	select {
	case p = <-pending:
	case err := <-done:
		t.Fatalf("agent returned before pending: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("agent never reported a pending request")
	}
	if _, err := e.srv.ApproveEnrollment(e.ctx, "token:alice", p.ID, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not finish after approval")
	}
	defer id.Close()
	if id.Machine != "waits-1" {
		t.Fatalf("agent enrolled as %q", id.Machine)
	}
}

func TestApprovalOperatorRoutes(t *testing.T) {
	e := newEnv(t, withApproval(100, 5))
	e.srv.ActorOf = func(r *http.Request) string { return "token:" + r.Header.Get("X-Test-Actor") }
	mux := http.NewServeMux()
	roles := map[string]string{}
	e.srv.RegisterOperator(func(method, path, role, summary string, h http.HandlerFunc) {
		roles[method+" "+path] = role
		mux.Handle(method+" "+path, h)
	})
	for _, rt := range []string{"POST /api/v1/enrollments/{id}/approve", "POST /api/v1/enrollments/{id}/deny"} {
		if roles[rt] != store.RoleOperator {
			t.Errorf("%s: role %q, want operator", rt, roles[rt])
		}
	}
	key := newKey(t)
	_, p, msg := e.requestEnrollment(key, "", facts("52:54:00:b0:00:01", "hostname", "routed-1"))
	if p == nil {
		t.Fatal(msg)
	}
	call := func(path, body string) (int, string) {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("X-Test-Actor", "carol")
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	if code, body := call("/api/v1/enrollments/enr-000000000000/approve", ""); code != http.StatusNotFound {
		t.Fatalf("approve of an unknown request: %d %s", code, body)
	}
	if code, body := call("/api/v1/enrollments/"+p.ID+"/approve", `{"machine":"Not A Name"}`); code != http.StatusUnprocessableEntity {
		t.Fatalf("approve with an invalid machine name: %d %s", code, body)
	}
	if code, body := call("/api/v1/enrollments/"+p.ID+"/approve", `{"machine":"routed-1"}`); code != http.StatusOK || !strings.Contains(body, `"state":"approved"`) {
		t.Fatalf("approve: %d %s", code, body)
	}
	if code, body := call("/api/v1/enrollments/"+p.ID+"/deny", `{}`); code != http.StatusConflict {
		t.Fatalf("deny after approve: %d %s, want 409", code, body)
	}
	if a := e.auditEntries("enrollment-approve"); len(a) != 1 || a[0].Actor != "token:carol" {
		t.Fatalf("audit %+v", a)
	}
}

func TestApprovalHousekeepExpiresAndFreesPlaces(t *testing.T) {
	e := newEnv(t, withApproval(100, 1))
	key := newKey(t)
	_, p, msg := e.requestEnrollment(key, "", facts("52:54:00:b1:00:01"))
	if p == nil {
		t.Fatal(msg)
	}
	if code, _, _ := e.requestEnrollment(newKey(t), "", facts("52:54:00:b1:00:02")); code != http.StatusTooManyRequests {
		t.Fatalf("second request from one source with a cap of 1: %d", code)
	}
	e.clock.Advance(DefaultApprovalTTL + time.Second)
	if _, err := e.srv.Housekeep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if s := e.enrollmentSpec(p.ID); s.State != agentwire.EnrollmentExpired {
		t.Fatalf("state after expiry and housekeeping: %s", s.State)
	}
	if code, _, msg := e.requestEnrollment(newKey(t), "", facts("52:54:00:b1:00:03")); code != http.StatusAccepted {
		t.Fatalf("request after the expired one left: %d %s", code, msg)
	}
	e.clock.Advance(decidedRetention + DefaultApprovalTTL + time.Hour)
	if _, err := e.srv.Housekeep(e.ctx); err != nil {
		t.Fatal(err)
	}
	err := e.st.View(e.ctx, func(tx store.Tx) error {
		_, err := tx.Get(e.ctx, "Enrollment", p.ID)
		return err
	})
	if err == nil {
		t.Fatal("an expired request older than the retention was kept")
	}
}
