package secrets

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/store"
)

func keyFile(t *testing.T, path string) []byte {
	t.Helper()
	k, err := readKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func versionKEKs(t *testing.T, st store.Store) []string {
	t.Helper()
	var ids []string
	err := st.View(context.Background(), func(tx store.Tx) error {
		var err error
		ids, err = tx.SecretKEKIDs(context.Background())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestRotateKEK(t *testing.T) {
	e := newFleet(t)
	ctx := context.Background()
	e.set("db-password", dbPassword+"-v2")
	oldKey := keyFile(t, e.kekPath)
	var hookOld, hookNew []byte
	committed := false
	e.svc.RotationHooks = []RotationHook{func(ctx context.Context, tx store.Tx, o, n []byte) (func(), error) {
		hookOld, hookNew = bytes.Clone(o), bytes.Clone(n)
		return func() { committed = true }, nil
	}}
	res, err := e.svc.RotateKEK(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	newKey := keyFile(t, e.kekPath)
	if res.Rewrapped != 3 || res.OldKEKID != KEKID(oldKey) || res.NewKEKID != KEKID(newKey) || bytes.Equal(oldKey, newKey) {
		t.Fatalf("rotation %+v", res)
	}
	if !bytes.Equal(hookOld, oldKey) || !bytes.Equal(hookNew, newKey) || !committed {
		t.Fatal("the rotation hook did not get the old and new keys, or was not told of the commit")
	}
	for _, sib := range []string{".new", ".old"} {
		if _, err := os.Stat(e.kekPath + sib); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind: %v", sib, err)
		}
	}
	if ids := versionKEKs(t, e.store); len(ids) != 1 || ids[0] != res.NewKEKID {
		t.Fatalf("versions wrapped with %v", ids)
	}
	if e.svc.Keys.CurrentID() != res.NewKEKID || len(e.svc.Keys.IDs()) != 1 {
		t.Fatalf("ring after rotation: %v", e.svc.Keys.IDs())
	}
	// Every version still opens, in this process and after a restart with the file.
	for _, tc := range []struct {
		name    string
		version int64
		want    string
	}{{"db-password", 1, dbPassword}, {"db-password", 2, dbPassword + "-v2"}, {"api-token", 1, apiToken}} {
		got, _, err := e.svc.Reveal(ctx, admin, tc.name, tc.version)
		if err != nil || string(got) != tc.want {
			t.Fatalf("reveal %s v%d after rotation: %v", tc.name, tc.version, err)
		}
	}
	e.restart()
	if got, _, err := e.svc.Reveal(ctx, admin, "api-token", 0); err != nil || string(got) != apiToken {
		t.Fatalf("reveal after restart: %v", err)
	}
	e.set("db-password", "after rotation")
	if n := countAudit(e.auditEntries(), "rotate-key", "re-wrapped 3 data keys"); n != 1 {
		t.Fatalf("%d rotation audit entries", n)
	}
}

func TestRotationHookFailureChangesNothing(t *testing.T) {
	e := newFleet(t)
	oldKey := keyFile(t, e.kekPath)
	e.svc.RotationHooks = []RotationHook{func(context.Context, store.Tx, []byte, []byte) (func(), error) {
		return func() { t.Error("afterCommit of a failed rotation ran") }, errors.New("CA key busy")
	}}
	if _, err := e.svc.RotateKEK(context.Background(), admin); err == nil || !strings.Contains(err.Error(), "CA key busy") {
		t.Fatalf("rotation with a failing hook: %v", err)
	}
	if !bytes.Equal(keyFile(t, e.kekPath), oldKey) {
		t.Fatal("the key file changed")
	}
	if _, err := os.Stat(e.kekPath + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("kek.key.new left behind")
	}
	if ids := versionKEKs(t, e.store); len(ids) != 1 || ids[0] != KEKID(oldKey) {
		t.Fatalf("versions wrapped with %v", ids)
	}
	e.restart()
	if got, _, err := e.svc.Reveal(context.Background(), admin, "db-password", 0); err != nil || string(got) != dbPassword {
		t.Fatal(err)
	}
}

// A crash before the rotation committed leaves kek.key.new: the next start removes it.
func TestRotationCrashBeforeCommit(t *testing.T) {
	e := newFleet(t)
	oldKey := keyFile(t, e.kekPath)
	spare, _ := newKEK()
	if err := writeKEKFile(e.kekPath+".new", spare); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if _, err := os.Stat(e.kekPath + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("kek.key.new of an uncommitted rotation kept")
	}
	if !bytes.Equal(keyFile(t, e.kekPath), oldKey) || e.svc.Keys.CurrentID() != KEKID(oldKey) || len(e.svc.Keys.IDs()) != 1 {
		t.Fatalf("keys after restart: %v", e.svc.Keys.IDs())
	}
	if got, _, err := e.svc.Reveal(context.Background(), admin, "db-password", 0); err != nil || string(got) != dbPassword {
		t.Fatal(err)
	}
}

// A crash after the commit, before the key file was replaced: the next start finishes
// the swap.
func TestRotationCrashAfterCommit(t *testing.T) {
	e := newFleet(t)
	ctx := context.Background()
	oldKey := keyFile(t, e.kekPath)
	// Do steps 1 and 2 of a rotation by hand, then "crash".
	raw, _ := newKEK()
	next, _ := newKEKEntry(raw)
	if err := writeKEKFile(e.kekPath+".new", raw); err != nil {
		t.Fatal(err)
	}
	e.svc.Keys.add(next)
	err := e.store.Update(ctx, func(tx store.Tx) error {
		vs, err := tx.ListSecretVersions(ctx, "")
		if err != nil {
			return err
		}
		for i := range vs {
			w, err := e.svc.Keys.rewrap(&vs[i], next)
			if err != nil {
				return err
			}
			if err := tx.RewrapSecretVersion(ctx, vs[i].Name, vs[i].Version, next.id, w); err != nil {
				return err
			}
		}
		return tx.SetCurrentSecretKEK(ctx, next.id)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(keyFile(t, e.kekPath), oldKey) {
		t.Fatal("setup: the key file changed")
	}
	e.restart()
	if !bytes.Equal(keyFile(t, e.kekPath), raw) {
		t.Fatal("the next start did not put the new key in kek.key")
	}
	for _, sib := range []string{".new", ".old"} {
		if _, err := os.Stat(e.kekPath + sib); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind: %v", sib, err)
		}
	}
	if got, _, err := e.svc.Reveal(ctx, admin, "db-password", 0); err != nil || string(got) != dbPassword {
		t.Fatal(err)
	}
	e.set("db-password", "new")
}

func TestRotateWithoutKeyFile(t *testing.T) {
	e := newEnv(t)
	ring, _ := NewKeyRing(bytes.Repeat([]byte{7}, KEKSize))
	svc := &Service{Store: e.store, Keys: ring}
	if _, err := svc.RotateKEK(context.Background(), admin); err == nil {
		t.Fatal("an in-memory ring rotated")
	}
}
