package enroll

import (
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
