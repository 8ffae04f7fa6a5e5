package testkit_test

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
)

// The kit is for tests only: no package of the kiln binary may import it (it
// builds binaries, opens stores in temporary dirs and reads CI).
func TestNotImportedByKiln(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/kilnhq/kiln/cmd/kiln").Output()
	if err != nil {
		t.Fatalf("go list -deps of cmd/kiln: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/kilnhq/kiln/internal/inventory") {
		t.Fatalf("go list -deps of cmd/kiln lacks internal/inventory: not the list this test means to check:\n%s", out)
	}
	if slices.Contains(deps, "github.com/kilnhq/kiln/internal/testkit") {
		t.Fatal("cmd/kiln imports internal/testkit; it is for _test.go files only")
	}
}

func TestNewStoreAppliesManifests(t *testing.T) {
	e := testkit.NewStore(t,
		"kind: Profile\nmetadata: {name: p}\nspec: {boot: {agent: true}}\n",
		"kind: Machine\nmetadata: {name: m-1}\nspec: {profile: p, interfaces: [{mac: '52:54:00:00:00:01'}]}\n")
	for _, name := range []string{"p", "m-1"} {
		kind := map[string]string{"p": "Profile", "m-1": "Machine"}[name]
		if _, err := e.Inv.Get(context.Background(), kind, name); err != nil {
			t.Errorf("%s %s not applied: %v", kind, name, err)
		}
	}
	if _, err := testkit.Apply(context.Background(), e.Inv, "kind: Machine\nmetadata: {name: m-2}\nspec: {profile: nope}\n"); err == nil {
		t.Error("a machine naming a missing profile was applied")
	}
}

// AuditLog lists every entry in order; AuditEntries keeps those of one action.
func TestAuditEntries(t *testing.T) {
	e := testkit.NewStore(t, "kind: Profile\nmetadata: {name: p}\nspec: {boot: {agent: true}}\n")
	e.Apply(t, "kind: Profile\nmetadata: {name: p, labels: {rack: r1}}\nspec: {boot: {agent: true}}\n")
	log := testkit.AuditLog(t, e.Store)
	if len(log) != 2 || log[0].Action != "create" || log[1].Action != "update" {
		t.Fatalf("audit log %+v, want a create then an update", log)
	}
	if got := testkit.AuditEntries(t, e.Store, "update"); len(got) != 1 || got[0].Name != "p" {
		t.Errorf("update entries %+v, want the one of profile p", got)
	}
	if got := testkit.AuditEntries(t, e.Store, "delete"); len(got) != 0 {
		t.Errorf("delete entries %+v, want none", got)
	}
}

// Background's serve runs until the test ends, and its context is cancelled then.
func TestBackground(t *testing.T) {
	started, stopped := make(chan struct{}), make(chan struct{})
	t.Run("server", func(t *testing.T) {
		testkit.Background(t, "serve", func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			close(stopped)
			return nil
		})
		<-started
		select {
		case <-stopped:
			t.Fatal("serve stopped before the test ended")
		default:
		}
	})
	select {
	case <-stopped:
	default:
		t.Fatal("serve still runs after its test ended")
	}
}
