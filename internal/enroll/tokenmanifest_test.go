package enroll

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
)

// The stored JoinToken can narrow what its signed claims allow, and an operator edits
// it by applying a manifest (the inventory service, as `kiln apply` does), not only
// through the join-token commands. These tests take that path.

// applyTokenManifest applies a manifest of the join token id: the stored object as
// `kiln get jointoken -o yaml` shows it, with edit applied to its spec, and without a
// resourceVersion (a manifest kept in git has none).
func (e *env) applyTokenManifest(manifest *resource.Object, edit func(*resource.JoinTokenSpec)) {
	e.t.Helper()
	spec, err := resource.Typed[resource.JoinTokenSpec](manifest)
	if err != nil {
		e.t.Fatal(err)
	}
	edit(spec)
	in := manifest.Clone()
	in.Metadata.ResourceVersion, in.Status = "", nil
	if in.Spec, err = json.Marshal(spec); err != nil {
		e.t.Fatal(err)
	}
	inv := &inventory.Service{Store: e.st, Now: e.clock.Now}
	if _, err := inv.Apply(e.ctx, inventory.Actor{ID: "token:test", Role: "admin"}, []*resource.Object{in}); err != nil {
		e.t.Fatalf("apply %s: %v", in.Key(), err)
	}
}

// Revocation is one-way, however it was made: a token revoked by a manifest
// (spec.revoked: true) or by RevokeToken refuses enrollment, and re-applying the
// token's manifest from before the revocation (revoked: false) does not bring it back.
func TestTokenRevocationIsOneWay(t *testing.T) {
	cases := []struct {
		name   string
		revoke func(e *env, id string, manifest *resource.Object)
	}{
		{"revoked by manifest", func(e *env, id string, manifest *resource.Object) {
			e.applyTokenManifest(manifest, func(s *resource.JoinTokenSpec) { s.Revoked = true })
		}},
		{"revoked by RevokeToken", func(e *env, id string, manifest *resource.Object) {
			if err := e.srv.RevokeToken(e.ctx, "token:test", id); err != nil {
				e.t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tok := e.token(TokenRequest{MaxUses: 10, TTL: "24h"})
			id := tokenID(t, tok)
			// The token works before it is revoked.
			if code, _, msg := e.enroll(e.newAgent(), tok, facts("52:54:00:0e:00:01")); code != http.StatusOK {
				t.Fatalf("enrollment before revocation: %d %s", code, msg)
			}
			before := e.object("JoinToken", id)

			tc.revoke(e, id, before)
			code, _, msg := e.enroll(e.newAgent(), tok, facts("52:54:00:0e:00:02"))
			if code != http.StatusUnauthorized || !strings.Contains(msg, "revoked") {
				t.Fatalf("enrollment with the revoked token: %d %q, want 401 ... revoked", code, msg)
			}

			// The manifest of before the revocation, applied again.
			e.applyTokenManifest(before, func(s *resource.JoinTokenSpec) { s.Revoked = false })
			stored, err := resource.Typed[resource.JoinTokenSpec](e.object("JoinToken", id))
			if err != nil {
				t.Fatal(err)
			}
			if !stored.Revoked {
				t.Error("re-applying revoked: false cleared the stored spec.revoked")
			}
			code, _, msg = e.enroll(e.newAgent(), tok, facts("52:54:00:0e:00:03"))
			if code != http.StatusUnauthorized || !strings.Contains(msg, "revoked") {
				t.Fatalf("enrollment after re-applying revoked: false: %d %q, want 401 ... revoked", code, msg)
			}
			if n := e.tokenUses(id); n != 1 {
				t.Errorf("uses = %d, want 1 (refused enrollments use nothing)", n)
			}
			if n := e.count("Machine"); n != 1 {
				t.Errorf("%d machines, want only the one enrolled before the revocation", n)
			}
		})
	}
}

// A stored spec.expiresAt earlier than the signed exp wins: a 24-hour token whose
// manifest is applied with an expiresAt in the past is refused as expired, and the
// refusal uses nothing.
func TestTokenExpiresAtAppliedInPast(t *testing.T) {
	e := newEnv(t)
	tok := e.token(TokenRequest{MaxUses: 10, TTL: "24h"})
	id := tokenID(t, tok)
	if code, _, msg := e.enroll(e.newAgent(), tok, facts("52:54:00:0f:00:01")); code != http.StatusOK {
		t.Fatalf("enrollment before the new expiry: %d %s", code, msg)
	}
	past := e.clock.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	e.applyTokenManifest(e.object("JoinToken", id), func(s *resource.JoinTokenSpec) { s.ExpiresAt = &past })

	code, _, msg := e.enroll(e.newAgent(), tok, facts("52:54:00:0f:00:02"))
	if code != http.StatusUnauthorized || !strings.Contains(msg, "expired") {
		t.Fatalf("enrollment after expiresAt was applied in the past: %d %q, want 401 ... expired", code, msg)
	}
	if !strings.Contains(msg, past.Format(time.RFC3339)) {
		t.Errorf("reason %q does not name the stored expiry %s", msg, past.Format(time.RFC3339))
	}
	if n := e.tokenUses(id); n != 1 {
		t.Errorf("uses = %d, want 1 (the refused enrollment uses nothing)", n)
	}
}
