package enroll

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// TestCreateTokenBounds: maxUses up to MaxTokenUses and a TTL up to MaxTokenTTL
// are accepted, one past either is refused naming the field, and so is a TTL of
// zero; a refused token is not stored.
func TestCreateTokenBounds(t *testing.T) {
	e := newEnv(t)
	admin := inventory.Actor{ID: "token:admin", Role: store.RoleAdmin}
	for _, tc := range []struct {
		req  TokenRequest
		want string // "" accepted, else the refusal names it
	}{
		{TokenRequest{MaxUses: MaxTokenUses}, ""},
		{TokenRequest{MaxUses: MaxTokenUses + 1}, "maxUses"},
		{TokenRequest{TTL: MaxTokenTTL.String()}, ""},
		{TokenRequest{TTL: (MaxTokenTTL + time.Second).String()}, "ttl"},
		{TokenRequest{TTL: "0s"}, "ttl"},
		{TokenRequest{TTL: "1s"}, ""},
	} {
		tc.req.Profile = "worker"
		before := e.count("JoinToken")
		_, err := e.srv.CreateTokenAs(e.ctx, admin, tc.req)
		stored := e.count("JoinToken") - before
		switch {
		case tc.want == "" && (err != nil || stored != 1):
			t.Errorf("%+v: %v, %d stored; want accepted", tc.req, err, stored)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want+":") || stored != 0):
			t.Errorf("%+v: %v, %d stored; want refused naming %s", tc.req, err, stored, tc.want)
		}
	}
}

// TestCreateTokenReachingSecrets: an operator may not create a join token whose
// profile leads to secrets (the machine it enrolls could read them); an admin
// may, and so may the server itself (no role).
func TestCreateTokenReachingSecrets(t *testing.T) {
	e := newEnv(t)
	if _, err := testkit.Apply(e.ctx, &inventory.Service{Store: e.st}, `
kind: Secret
metadata: {name: db-password}
spec: {}
---
kind: Profile
metadata: {name: with-secrets}
spec: {boot: {agent: true}, secrets: [db-password]}
`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		actor inventory.Actor
		ok    bool
	}{
		{inventory.Actor{ID: "token:op", Role: store.RoleOperator}, false},
		{inventory.Actor{ID: "token:admin", Role: store.RoleAdmin}, true},
		{inventory.Actor{ID: "kiln"}, true},
	} {
		_, err := e.srv.CreateTokenAs(e.ctx, tc.actor, TokenRequest{Profile: "with-secrets"})
		var fe *inventory.ForbiddenError
		if tc.ok != (err == nil) || (!tc.ok && !errors.As(err, &fe)) {
			t.Errorf("%s (%q): %v, want ok=%v or a ForbiddenError", tc.actor.ID, tc.actor.Role, err, tc.ok)
		}
	}
	if _, err := e.srv.CreateTokenAs(e.ctx, inventory.Actor{ID: "token:op", Role: store.RoleOperator}, TokenRequest{Profile: "worker"}); err != nil {
		t.Errorf("an operator's token for a profile without secrets: %v", err)
	}
}

// TestScopeSummary: a token's audit summary names every part of its scope it has,
// and none it lacks.
func TestScopeSummary(t *testing.T) {
	exp := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	full := &resource.JoinTokenSpec{Profile: "db", MaxUses: 3, ExpiresAt: &exp, Machine: "db-1",
		MACs: []string{"52:54:00:00:00:01", "52:54:00:00:00:02"}, CIDRs: []string{"10.0.0.0/24"}, Labels: map[string]string{"rack": "a", "env": "prod"}}
	for _, tc := range []struct {
		spec     *resource.JoinTokenSpec
		policies int
		want     string
	}{
		{&resource.JoinTokenSpec{Profile: "worker", MaxUses: 1}, 0, "profile worker, max uses 1"},
		{full, 2, "profile db, max uses 3, expires 2027-01-02T03:04:05Z, machine db-1, macs 52:54:00:00:00:01,52:54:00:00:00:02, cidrs 10.0.0.0/24, labels env,rack, 2 policy expressions"},
	} {
		if got := scopeSummary(tc.spec, tc.policies); got != tc.want {
			t.Errorf("scopeSummary = %q, want %q", got, tc.want)
		}
	}
}

// TestTokenInfoRevoked: a token is listed as revoked when its manifest or its
// status (RevokeToken) says so, and only then.
func TestTokenInfoRevoked(t *testing.T) {
	for _, tc := range []struct {
		spec, status string
		want         bool
	}{
		{`{"profile":"worker","maxUses":1}`, `{"uses":0}`, false},
		{`{"profile":"worker","maxUses":1}`, ``, false},
		{`{"profile":"worker","maxUses":1,"revoked":true}`, `{"uses":0}`, true},
		{`{"profile":"worker","maxUses":1}`, `{"uses":1,"revokedAt":"2026-12-07T10:00:00Z"}`, true},
	} {
		o := &resource.Object{Kind: "JoinToken", Metadata: resource.Metadata{Name: "t1"}, Spec: []byte(tc.spec)}
		if tc.status != "" {
			o.Status = []byte(tc.status)
		}
		if got := tokenInfo(o).Revoked; got != tc.want {
			t.Errorf("spec %s status %s: revoked %v, want %v", tc.spec, tc.status, got, tc.want)
		}
	}
}

// TestRevokeTokenOnce: revoking a token marks its manifest and its status (when,
// for the listing) and is audited once; revoking it again changes nothing;
// revoking one its manifest already revoked records the time and the audit entry.
func TestRevokeTokenOnce(t *testing.T) {
	e := newEnv(t)
	admin := inventory.Actor{ID: "token:admin", Role: store.RoleAdmin}
	created, err := e.srv.CreateTokenAs(e.ctx, admin, TokenRequest{Profile: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	id := created.ID
	status := func() tokenStatus {
		var st tokenStatus
		if err := json.Unmarshal(e.object("JoinToken", id).Status, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	for range 2 {
		if err := e.srv.RevokeToken(e.ctx, "token:admin", id); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Minute)
	}
	if n := len(e.auditEntries("revoke")); n != 1 {
		t.Errorf("%d revoke audit entries after revoking twice, want 1", n)
	}
	if st := status(); st.RevokedAt == nil || !st.RevokedAt.Equal(e.clock.Now().Add(-2*time.Minute)) {
		t.Errorf("status.revokedAt %v, want the first revocation's time", st.RevokedAt)
	}

	// Revoked by its manifest first (spec.revoked), then by RevokeToken.
	created, err = e.srv.CreateTokenAs(e.ctx, admin, TokenRequest{Profile: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	id = created.ID
	o := e.object("JoinToken", id)
	spec, _ := resource.Typed[resource.JoinTokenSpec](o)
	spec.Revoked = true
	o.Spec, _ = json.Marshal(spec)
	if err := e.st.Update(e.ctx, func(tx store.Tx) error { return tx.Update(e.ctx, o) }); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.RevokeToken(e.ctx, "token:admin", id); err != nil {
		t.Fatal(err)
	}
	if st := status(); st.RevokedAt == nil {
		t.Error("revoking a token its manifest revoked recorded no time")
	}
	if n := len(e.auditEntries("revoke")); n != 2 {
		t.Errorf("%d revoke audit entries, want 2", n)
	}
}

// TestEKPin: the EK a binding must present: a new machine's from the spec it
// will be created with; an existing machine's from its spec, else from the pin
// an approval left in its status; none otherwise.
func TestEKPin(t *testing.T) {
	const a, b = "aa11", "bb22"
	withSpec := &resource.Object{Kind: "Machine", Spec: []byte(`{"profile":"worker","tpm":{"ekSHA256":"` + a + `"}}`), Status: []byte(`{"tpm":{"ekSHA256":"` + b + `"}}`)}
	withStatus := &resource.Object{Kind: "Machine", Spec: []byte(`{"profile":"worker"}`), Status: []byte(`{"tpm":{"ekSHA256":"` + b + `"}}`)}
	bare := &resource.Object{Kind: "Machine", Spec: []byte(`{"profile":"worker"}`)}
	for _, tc := range []struct {
		name string
		b    *binding
		want string
	}{
		{"new, pinned", &binding{spec: &resource.MachineSpec{Profile: "worker", TPM: &resource.MachineTPM{EKSHA256: a}}}, a},
		{"new, unpinned", &binding{spec: &resource.MachineSpec{Profile: "worker"}}, ""},
		{"new, no spec", &binding{}, ""},
		{"existing, spec pin", &binding{obj: withSpec, spec: &resource.MachineSpec{}}, a},
		{"existing, status pin", &binding{obj: withStatus, spec: &resource.MachineSpec{TPM: &resource.MachineTPM{EKSHA256: a}}}, b},
		{"existing, none", &binding{obj: bare}, ""},
	} {
		if got := ekPin(tc.b); got != tc.want {
			t.Errorf("%s: ekPin = %q, want %q", tc.name, got, tc.want)
		}
	}
}
