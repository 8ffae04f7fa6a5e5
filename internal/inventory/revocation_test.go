package inventory_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

func joinToken(spec string) *resource.Object {
	return &resource.Object{Kind: "JoinToken", Metadata: resource.Metadata{Name: "jt-1"}, Spec: json.RawMessage(spec)}
}

// A join token's revocation is one-way through Apply and Update alike: a later
// spec.revoked: false (an old manifest applied again) keeps it revoked, while the
// rest of the spec is updated as given.
func TestJoinTokenRevocationIsOneWay(t *testing.T) {
	ctx := context.Background()
	st := testkit.OpenSQLite(t, t.TempDir())
	svc := &inventory.Service{Store: st}
	actor := inventory.Actor{ID: "token:test", Role: "admin"}
	profile := &resource.Object{Kind: "Profile", Metadata: resource.Metadata{Name: "worker"}, Spec: json.RawMessage(`{"boot":{"agent":true}}`)}
	if _, err := svc.Apply(ctx, actor, []*resource.Object{profile, joinToken(`{"profile":"worker","maxUses":5}`)}); err != nil {
		t.Fatal(err)
	}
	stored := func() *resource.JoinTokenSpec {
		t.Helper()
		var o *resource.Object
		if err := st.View(ctx, func(tx store.Tx) error {
			var err error
			o, err = tx.Get(ctx, "JoinToken", "jt-1")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		spec, err := resource.Typed[resource.JoinTokenSpec](o)
		if err != nil {
			t.Fatal(err)
		}
		return spec
	}
	apply := func(spec string) string {
		t.Helper()
		res, err := svc.Apply(ctx, actor, []*resource.Object{joinToken(spec)})
		if err != nil {
			t.Fatal(err)
		}
		return res[0].Outcome
	}

	// Not revoked yet: revoked: false is taken as given.
	if apply(`{"profile":"worker","maxUses":6}`) != inventory.Updated || stored().Revoked {
		t.Fatal("a token that was never revoked came out revoked")
	}
	if got := apply(`{"profile":"worker","maxUses":6,"revoked":true}`); got != inventory.Updated || !stored().Revoked {
		t.Fatalf("revoking by apply: outcome %s, revoked %v", got, stored().Revoked)
	}
	// The manifest from before the revocation, applied again.
	if got := apply(`{"profile":"worker","maxUses":6}`); got != inventory.Unchanged {
		t.Errorf("re-applying the old manifest: outcome %s, want %s (it changes nothing)", got, inventory.Unchanged)
	}
	if !stored().Revoked {
		t.Fatal("apply of revoked: false un-revoked the token")
	}
	// Other fields still apply; the revocation stays.
	if got := apply(`{"profile":"worker","maxUses":2,"revoked":false}`); got != inventory.Updated {
		t.Errorf("apply of maxUses 2: outcome %s, want %s", got, inventory.Updated)
	}
	if s := stored(); !s.Revoked || s.MaxUses != 2 {
		t.Fatalf("after apply: revoked %v maxUses %d, want revoked, 2", s.Revoked, s.MaxUses)
	}
	// Update (PUT) is held to the same rule.
	if _, err := svc.Update(ctx, actor, joinToken(`{"profile":"worker","maxUses":3,"revoked":false}`)); err != nil {
		t.Fatal(err)
	}
	if s := stored(); !s.Revoked || s.MaxUses != 3 {
		t.Fatalf("after update: revoked %v maxUses %d, want revoked, 3", s.Revoked, s.MaxUses)
	}
}
