// Package storetest is the conformance suite every store.Store backend passes, and
// shared fixtures and benchmarks for them.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Run runs the conformance suite. open(t) must return a store on an empty database
// that belongs to t, and close it when t ends. The persistence test closes the store
// and calls open again with the same t: it must then reopen the same database.
// Reopenable builds such a function.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) store.Store)
	}{
		{"CRUD", testCRUD},
		{"ResourceVersion", testResourceVersion},
		{"UniqueKeys", testUniqueKeys},
		{"KeysVersion", testKeysVersion},
		{"CreateBatch", testCreateBatch},
		{"List", testList},
		{"Annotations", testAnnotations},
		{"Rollback", testRollback},
		{"ReadOnlyView", testReadOnlyView},
		{"Audit", testAudit},
		{"AuditChainAnchored", testAuditChainAnchored},
		{"Events", testEvents},
		{"EventRetention", testEventRetention},
		{"AuditRetention", testAuditRetention},
		{"APITokens", testAPITokens},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"Reopen", testReopen},
		{"Secrets", testSecrets},
		{"ChangeLog", testChangeLog},
		{"EventLog", testEventLog},
		{"CommitNotifier", testCommitNotifier},
		{"WebhookState", testWebhookState},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// Reopenable returns an open function for Run from two steps: create makes a new
// empty database for t and returns where it is (a directory, a URL), and openAt opens
// a store there. A second open with the same t reopens t's database. Stores opened
// through it are closed when t ends.
func Reopenable(create func(t *testing.T) string, openAt func(t *testing.T, where string) store.Store) func(t *testing.T) store.Store {
	var mu sync.Mutex
	dbs := map[*testing.T]string{}
	return func(t *testing.T) store.Store {
		t.Helper()
		mu.Lock()
		where, ok := dbs[t]
		mu.Unlock()
		if !ok {
			where = create(t)
			mu.Lock()
			dbs[t] = where
			mu.Unlock()
			t.Cleanup(func() {
				mu.Lock()
				delete(dbs, t)
				mu.Unlock()
			})
		}
		st := openAt(t, where)
		t.Cleanup(func() {
			if err := st.Close(); err != nil {
				t.Errorf("close store: %v", err)
			}
		})
		return st
	}
}

// MAC returns the i-th test MAC address (52:54:00 is the QEMU prefix).
func MAC(i int) string {
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i))
}

// MachineName returns the i-th test machine's name; names sort in index order.
func MachineName(i int) string { return fmt.Sprintf("m-%06d", i) }

// Machine returns the i-th test machine: one interface with MAC(i), labeled with a
// rack (r0 ... r9 by i mod 10).
func Machine(i int) *resource.Object {
	return NewMachine(MachineName(i), map[string]string{"rack": "r" + strconv.Itoa(i%10)}, MAC(i))
}

// NewMachine returns a Machine object with one interface per MAC.
func NewMachine(name string, labels map[string]string, macs ...string) *resource.Object {
	spec := resource.MachineSpec{Profile: "default"}
	for i, m := range macs {
		spec.Interfaces = append(spec.Interfaces, resource.Interface{Name: "eth" + strconv.Itoa(i), MAC: m})
	}
	b, err := json.Marshal(spec)
	if err != nil {
		panic(err)
	}
	return &resource.Object{
		APIVersion: resource.APIVersion,
		Kind:       "Machine",
		Metadata:   resource.Metadata{Name: name, Labels: labels},
		Spec:       b,
	}
}

// Populate creates machines Machine(0) ... Machine(n-1) in large transactions.
func Populate(tb testing.TB, st store.Store, n int) {
	tb.Helper()
	const batch = 10000
	ctx := context.Background()
	for lo := 0; lo < n; lo += batch {
		hi := min(lo+batch, n)
		err := st.Update(ctx, func(tx store.Tx) error {
			for i := lo; i < hi; i++ {
				if err := tx.Create(ctx, Machine(i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatalf("populate %d machines: %v", n, err)
		}
	}
}

// ---- helpers ----------------------------------------------------------------

func update(t *testing.T, st store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := st.Update(context.Background(), fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func view(t *testing.T, st store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := st.View(context.Background(), fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

func get(t *testing.T, st store.Store, kind, name string) (obj *resource.Object, err error) {
	t.Helper()
	_ = st.View(context.Background(), func(tx store.Tx) error {
		obj, err = tx.Get(context.Background(), kind, name)
		return nil
	})
	return obj, err
}

func mustGet(t *testing.T, st store.Store, kind, name string) *resource.Object {
	t.Helper()
	obj, err := get(t, st, kind, name)
	if err != nil {
		t.Fatalf("get %s/%s: %v", kind, name, err)
	}
	return obj
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func jsonEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v in %s", what, err, got)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: %v in %s", what, err, want)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Fatalf("%s: got %s, want %s", what, got, want)
	}
}

func names(objs []*resource.Object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.Metadata.Name
	}
	return out
}

func profile(name string) *resource.Object {
	return &resource.Object{Kind: "Profile", Metadata: resource.Metadata{Name: name},
		Spec: json.RawMessage(`{"boot":{"agent":true}}`)}
}

// ---- tests ------------------------------------------------------------------

func testCRUD(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	m := NewMachine("web-1", map[string]string{"role": "web"}, "52:54:00:00:00:01")
	m.Status = json.RawMessage(`{"state":"new"}`)
	before := time.Now().Add(-time.Second)
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, m) })
	if m.Metadata.ResourceVersion != "1" {
		t.Errorf("create: resourceVersion %q, want 1", m.Metadata.ResourceVersion)
	}
	if m.Metadata.CreatedAt == nil || m.Metadata.UpdatedAt == nil {
		t.Fatalf("create: timestamps not set: %+v", m.Metadata)
	}
	if m.Metadata.CreatedAt.Location() != time.UTC || m.Metadata.CreatedAt.Before(before) || m.Metadata.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("create: createdAt %v is not now in UTC", m.Metadata.CreatedAt)
	}

	got := mustGet(t, st, "Machine", "web-1")
	if got.Kind != "Machine" || got.Metadata.Name != "web-1" || got.Metadata.Labels["role"] != "web" || len(got.Metadata.Labels) != 1 {
		t.Errorf("get: %+v", got)
	}
	if got.Metadata.ResourceVersion != "1" || !got.Metadata.CreatedAt.Equal(*m.Metadata.CreatedAt) || !got.Metadata.UpdatedAt.Equal(*m.Metadata.UpdatedAt) {
		t.Errorf("get: metadata %+v, created as %+v", got.Metadata, m.Metadata)
	}
	if got.Metadata.CreatedAt.Location() != time.UTC {
		t.Errorf("get: createdAt %v is not UTC", got.Metadata.CreatedAt)
	}
	jsonEqual(t, "get: spec", got.Spec, m.Spec)
	jsonEqual(t, "get: status", got.Status, m.Status)

	// Objects returned are copies: changing one changes neither the store nor the next copy.
	got.Metadata.Labels["role"] = "db"
	got.Spec[0] = ' '
	if again := mustGet(t, st, "Machine", "web-1"); again.Metadata.Labels["role"] != "web" || again.Spec[0] != '{' {
		t.Errorf("get returned shared state: %+v", again)
	}

	// A kind without unique keys, without labels or status.
	p := profile("default")
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, p) })
	gp := mustGet(t, st, "Profile", "default")
	if len(gp.Metadata.Labels) != 0 || len(gp.Status) != 0 {
		t.Errorf("profile: labels %v status %s, want none", gp.Metadata.Labels, gp.Status)
	}
	// Same name, other kind: a different object.
	if _, err := get(t, st, "Profile", "web-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get Profile/web-1: %v, want ErrNotFound", err)
	}

	err := st.Update(ctx, func(tx store.Tx) error {
		return tx.Create(ctx, NewMachine("web-1", nil, "52:54:00:00:00:99"))
	})
	wantErr(t, "create existing", err, store.ErrExists)
	if err != nil && !strings.Contains(err.Error(), `create machine "web-1"`) {
		t.Errorf("create existing: error %q does not say what was done", err)
	}

	// Update replaces labels, spec and status.
	time.Sleep(2 * time.Millisecond)
	upd := mustGet(t, st, "Machine", "web-1")
	upd.Metadata.Labels = map[string]string{"role": "db", "rack": "r1"}
	upd.Spec = NewMachine("x", nil, "52:54:00:00:00:02").Spec
	upd.Status = json.RawMessage(`{"state":"provisioned"}`)
	update(t, st, func(tx store.Tx) error { return tx.Update(ctx, upd) })
	if upd.Metadata.ResourceVersion != "2" {
		t.Errorf("update: resourceVersion %q, want 2", upd.Metadata.ResourceVersion)
	}
	if !upd.Metadata.CreatedAt.Equal(*m.Metadata.CreatedAt) || !upd.Metadata.UpdatedAt.After(*m.Metadata.UpdatedAt) {
		t.Errorf("update: timestamps %v %v, created %v", upd.Metadata.CreatedAt, upd.Metadata.UpdatedAt, m.Metadata.CreatedAt)
	}
	got = mustGet(t, st, "Machine", "web-1")
	if got.Metadata.ResourceVersion != "2" || got.Metadata.Labels["role"] != "db" || got.Metadata.Labels["rack"] != "r1" {
		t.Errorf("after update: %+v", got.Metadata)
	}
	if !got.Metadata.UpdatedAt.Equal(*upd.Metadata.UpdatedAt) || !got.Metadata.CreatedAt.Equal(*m.Metadata.CreatedAt) {
		t.Errorf("after update: timestamps %v %v", got.Metadata.CreatedAt, got.Metadata.UpdatedAt)
	}
	jsonEqual(t, "after update: spec", got.Spec, upd.Spec)
	jsonEqual(t, "after update: status", got.Status, upd.Status)

	// Update can clear labels and status.
	got.Metadata.Labels, got.Status = nil, nil
	update(t, st, func(tx store.Tx) error { return tx.Update(ctx, got) })
	if g := mustGet(t, st, "Machine", "web-1"); len(g.Metadata.Labels) != 0 || len(g.Status) != 0 {
		t.Errorf("cleared labels and status came back: %v %s", g.Metadata.Labels, g.Status)
	}

	missing := NewMachine("nope", nil)
	missing.Metadata.ResourceVersion = "1"
	err = st.Update(ctx, func(tx store.Tx) error { return tx.Update(ctx, missing) })
	wantErr(t, "update missing", err, store.ErrNotFound)

	update(t, st, func(tx store.Tx) error { return tx.Delete(ctx, "Machine", "web-1", "") })
	_, err = get(t, st, "Machine", "web-1")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	err = st.Update(ctx, func(tx store.Tx) error { return tx.Delete(ctx, "Machine", "web-1", "") })
	wantErr(t, "delete missing", err, store.ErrNotFound)
	// The profile is untouched.
	mustGet(t, st, "Profile", "default")

	// A name can be reused after a delete; its resourceVersion starts again at 1.
	again := NewMachine("web-1", nil, "52:54:00:00:00:01")
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, again) })
	if again.Metadata.ResourceVersion != "1" {
		t.Errorf("re-create: resourceVersion %q, want 1", again.Metadata.ResourceVersion)
	}
}

func testResourceVersion(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	p := profile("p")
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, p) })
	// Several updates in one transaction bump the version each time.
	update(t, st, func(tx store.Tx) error {
		for want := 2; want <= 4; want++ {
			if err := tx.Update(ctx, p); err != nil {
				return err
			}
			if p.Metadata.ResourceVersion != strconv.Itoa(want) {
				return fmt.Errorf("resourceVersion %q, want %d", p.Metadata.ResourceVersion, want)
			}
		}
		return nil
	})
	if g := mustGet(t, st, "Profile", "p"); g.Metadata.ResourceVersion != "4" {
		t.Fatalf("stored resourceVersion %q, want 4", g.Metadata.ResourceVersion)
	}

	for _, rv := range []string{"3", "5", "x", "04", ""} { // "" last: it deletes
		stale := mustGet(t, st, "Profile", "p")
		stale.Metadata.ResourceVersion = rv
		stale.Spec = json.RawMessage(`{"boot":{"agent":false}}`)
		err := st.Update(ctx, func(tx store.Tx) error { return tx.Update(ctx, stale) })
		wantErr(t, fmt.Sprintf("update with resourceVersion %q", rv), err, store.ErrConflict)
		err = st.Update(ctx, func(tx store.Tx) error { return tx.Delete(ctx, "Profile", "p", rv) })
		if rv == "" {
			continue // deletes whatever is stored; checked below
		}
		wantErr(t, fmt.Sprintf("delete with resourceVersion %q", rv), err, store.ErrConflict)
	}
	// Nothing above changed it... except the unconditional delete: recreate and check.
	if _, err := get(t, st, "Profile", "p"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete with resourceVersion \"\" left the object: %v", err)
	}
	p = profile("p")
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, p) })
	stale := mustGet(t, st, "Profile", "p")
	stale.Metadata.ResourceVersion = "2"
	err := st.Update(ctx, func(tx store.Tx) error { return tx.Update(ctx, stale) })
	wantErr(t, "update with a future resourceVersion", err, store.ErrConflict)
	if g := mustGet(t, st, "Profile", "p"); g.Metadata.ResourceVersion != "1" {
		t.Fatalf("a failed update changed the object: %+v", g.Metadata)
	}
	// A conflict inside a transaction leaves it usable: the caller may carry on.
	update(t, st, func(tx store.Tx) error {
		stale := *p
		stale.Metadata.ResourceVersion = "7"
		if err := tx.Update(ctx, &stale); !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("stale update: %v, want ErrConflict", err)
		}
		if err := tx.Create(ctx, profile("p")); !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("create existing: %v, want ErrExists", err)
		}
		if err := tx.Delete(ctx, "Profile", "none", ""); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete missing: %v, want ErrNotFound", err)
		}
		return tx.Delete(ctx, "Profile", "p", "1")
	})
	if _, err := get(t, st, "Profile", "p"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete with the right resourceVersion: %v", err)
	}
}

func testUniqueKeys(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	macA, macB, macC := "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c"
	a := NewMachine("a", nil, macA, macB)
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, a) })

	lookup := func(key string) (*resource.Object, error) {
		var obj *resource.Object
		err := st.View(ctx, func(tx store.Tx) error {
			var err error
			obj, err = tx.LookupKey(ctx, "Machine", key)
			return err
		})
		return obj, err
	}
	for _, mac := range []string{macA, macB} {
		obj, err := lookup("mac:" + mac)
		if err != nil || obj.Metadata.Name != "a" || obj.Kind != "Machine" || len(obj.Spec) == 0 {
			t.Fatalf("lookup %s: %+v, %v", mac, obj, err)
		}
	}
	_, err := lookup("mac:" + macC)
	wantErr(t, "lookup unclaimed", err, store.ErrNotFound)
	_, err = lookup("mac:" + macC[:8]) // not a prefix match
	wantErr(t, "lookup prefix", err, store.ErrNotFound)
	// Keys are per kind.
	err = st.View(ctx, func(tx store.Tx) error { _, err := tx.LookupKey(ctx, "Profile", "mac:"+macA); return err })
	wantErr(t, "lookup in another kind", err, store.ErrNotFound)

	// Another machine claiming a MAC of a: a KeyConflictError naming a; nothing stored.
	err = st.Update(ctx, func(tx store.Tx) error { return tx.Create(ctx, NewMachine("b", nil, macC, macB)) })
	wantErr(t, "create with a claimed MAC", err, store.ErrDuplicateKey)
	var kc *store.KeyConflictError
	if !errors.As(err, &kc) || kc.Owner != "a" || kc.Kind != "Machine" || kc.Key != "mac:"+macB {
		t.Fatalf("create with a claimed MAC: %#v (%v), want a KeyConflictError owned by a", kc, err)
	}
	if _, err := get(t, st, "Machine", "b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a create that failed on a key left the object: %v", err)
	}
	if _, err := lookup("mac:" + macC); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a create that failed on a key left a key: %v", err)
	}
	// Handled inside a transaction, the failed create leaves nothing behind either.
	update(t, st, func(tx store.Tx) error {
		if err := tx.Create(ctx, NewMachine("b", nil, macC, macA)); !errors.Is(err, store.ErrDuplicateKey) {
			return fmt.Errorf("create with a claimed MAC: %v", err)
		}
		if _, err := tx.Get(ctx, "Machine", "b"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("failed create left the object: %v", err)
		}
		if _, err := tx.LookupKey(ctx, "Machine", "mac:"+macC); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("failed create left the key: %v", err)
		}
		return nil
	})

	b := NewMachine("b", nil, macC)
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, b) })

	// Updating b to claim a's MAC fails and changes nothing.
	b2 := mustGet(t, st, "Machine", "b")
	b2.Spec = NewMachine("b", nil, macC, macA).Spec
	err = st.Update(ctx, func(tx store.Tx) error { return tx.Update(ctx, b2) })
	if !errors.As(err, &kc) || kc.Owner != "a" {
		t.Fatalf("update claiming a's MAC: %v, want a KeyConflictError owned by a", err)
	}
	update(t, st, func(tx store.Tx) error {
		b3, err := tx.Get(ctx, "Machine", "b")
		if err != nil {
			return err
		}
		b3.Spec = NewMachine("b", nil, "52:54:00:00:00:0d", macB).Spec
		if err := tx.Update(ctx, b3); !errors.Is(err, store.ErrDuplicateKey) {
			return fmt.Errorf("update claiming a's MAC: %v", err)
		}
		// The failed update released nothing and claimed nothing.
		if o, err := tx.LookupKey(ctx, "Machine", "mac:"+macC); err != nil || o.Metadata.Name != "b" {
			return fmt.Errorf("b's own MAC after a failed update: %v, %v", o, err)
		}
		if _, err := tx.LookupKey(ctx, "Machine", "mac:52:54:00:00:00:0d"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("a failed update left a key: %v", err)
		}
		if g, _ := tx.Get(ctx, "Machine", "b"); g.Metadata.ResourceVersion != "1" {
			return fmt.Errorf("a failed update changed b: %+v", g.Metadata)
		}
		return nil
	})

	// Move macB from a to b in one transaction, after removing it from a.
	update(t, st, func(tx store.Tx) error {
		a, err := tx.Get(ctx, "Machine", "a")
		if err != nil {
			return err
		}
		a.Spec = NewMachine("a", nil, macA).Spec
		if err := tx.Update(ctx, a); err != nil {
			return err
		}
		b, err := tx.Get(ctx, "Machine", "b")
		if err != nil {
			return err
		}
		b.Spec = NewMachine("b", nil, macC, macB).Spec
		return tx.Update(ctx, b)
	})
	if obj, err := lookup("mac:" + macB); err != nil || obj.Metadata.Name != "b" {
		t.Fatalf("moved MAC: %v, %v", obj, err)
	}
	if obj, err := lookup("mac:" + macA); err != nil || obj.Metadata.Name != "a" {
		t.Fatalf("a's remaining MAC: %v, %v", obj, err)
	}

	// An update that keeps its keys and one that drops all of them.
	update(t, st, func(tx store.Tx) error {
		b, err := tx.Get(ctx, "Machine", "b")
		if err != nil {
			return err
		}
		b.Metadata.Labels = map[string]string{"x": "y"}
		return tx.Update(ctx, b)
	})
	if obj, err := lookup("mac:" + macC); err != nil || obj.Metadata.Name != "b" || obj.Metadata.Labels["x"] != "y" {
		t.Fatalf("lookup after a label update: %v, %v", obj, err)
	}
	update(t, st, func(tx store.Tx) error {
		a, err := tx.Get(ctx, "Machine", "a")
		if err != nil {
			return err
		}
		a.Spec = NewMachine("a", nil).Spec
		return tx.Update(ctx, a)
	})
	if _, err := lookup("mac:" + macA); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a MAC dropped by an update: %v", err)
	}

	// Delete frees the keys.
	update(t, st, func(tx store.Tx) error { return tx.Delete(ctx, "Machine", "b", "") })
	for _, mac := range []string{macB, macC} {
		if _, err := lookup("mac:" + mac); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("lookup %s after delete: %v", mac, err)
		}
	}
	c := NewMachine("c", nil, macB, macC)
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, c) })
	if obj, err := lookup("mac:" + macB); err != nil || obj.Metadata.Name != "c" {
		t.Fatalf("reused MAC: %v, %v", obj, err)
	}
}

func testList(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	// Names chosen so that byte order differs from "natural" and locale orders.
	all := []string{"a-1", "a.0", "a0", "b", "c-10", "c-2", "m-000", "z"}
	update(t, st, func(tx store.Tx) error {
		for i, n := range []int{5, 2, 7, 0, 3, 6, 1, 4} { // not in order
			rack := "r" + strconv.Itoa(n%2)
			if err := tx.Create(ctx, NewMachine(all[n], map[string]string{"rack": rack, "i": strconv.Itoa(n)}, MAC(1000+i))); err != nil {
				return err
			}
		}
		return tx.Create(ctx, profile("a-0")) // another kind is not listed
	})
	list := func(opts store.ListOptions) ([]string, string) {
		t.Helper()
		var objs []*resource.Object
		var next string
		view(t, st, func(tx store.Tx) error {
			var err error
			objs, next, err = tx.List(ctx, "Machine", opts)
			return err
		})
		for _, o := range objs {
			if o.Kind != "Machine" || o.Metadata.ResourceVersion != "1" || len(o.Spec) == 0 || o.Metadata.CreatedAt == nil {
				t.Fatalf("listed object is incomplete: %+v", o)
			}
		}
		return names(objs), next
	}
	eq := func(what string, got, want []string) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
	got, next := list(store.ListOptions{})
	eq("list all", got, all)
	if next != "" {
		t.Fatalf("list all: next %q, want empty", next)
	}

	// Pages of 3: full pages, next is the last name, and "" after the last page.
	var paged []string
	cont := ""
	for pages := 0; ; pages++ {
		got, next := list(store.ListOptions{Limit: 3, Continue: cont})
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		if next != "" && (len(got) != 3 || next != got[len(got)-1]) {
			t.Fatalf("page %d: %v, next %q", pages, got, next)
		}
		paged = append(paged, got...)
		if next == "" {
			break
		}
		cont = next
	}
	eq("paged", paged, all)
	// A limit that divides the list exactly: the last full page has no next.
	got, next = list(store.ListOptions{Limit: 4, Continue: "b"})
	eq("last full page", got, all[4:])
	if next != "" {
		t.Fatalf("last full page: next %q, want empty", next)
	}
	got, next = list(store.ListOptions{Limit: 100})
	eq("large limit", got, all)
	if next != "" {
		t.Fatalf("large limit: next %q", next)
	}
	got, _ = list(store.ListOptions{Continue: "c-10"})
	eq("continue without limit", got, all[5:])
	got, next = list(store.ListOptions{Continue: "zz"})
	if len(got) != 0 || next != "" {
		t.Fatalf("continue after the end: %v %q", got, next)
	}
	got, _ = list(store.ListOptions{Continue: "a5"}) // not an existing name
	eq("continue between names", got, all[3:])

	sel := func(s string) resource.Selector {
		t.Helper()
		sel, err := resource.ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		return sel
	}
	var r1 []string
	for i, n := range all {
		if i%2 == 1 {
			r1 = append(r1, n)
		}
	}
	got, next = list(store.ListOptions{Selector: sel("rack=r1")})
	eq("selector", got, r1)
	if next != "" {
		t.Fatalf("selector: next %q", next)
	}
	got, next = list(store.ListOptions{Selector: sel("rack=r1"), Limit: 2})
	eq("selector page 1", got, r1[:2])
	if next != r1[1] {
		t.Fatalf("selector page 1: next %q, want %q", next, r1[1])
	}
	got, next = list(store.ListOptions{Selector: sel("rack=r1"), Limit: 2, Continue: next})
	eq("selector page 2", got, r1[2:])
	if next != "" {
		t.Fatalf("selector page 2: next %q, want empty (no more matches)", next)
	}
	got, _ = list(store.ListOptions{Selector: sel("i in (0,7),rack")})
	eq("selector in", got, []string{all[0], all[7]})
	got, next = list(store.ListOptions{Selector: sel("nothing"), Limit: 1})
	if len(got) != 0 || next != "" {
		t.Fatalf("selector matching nothing: %v %q", got, next)
	}

	// Pages stay full when the selector rejects far more rows than a page.
	const n = 700
	update(t, st, func(tx store.Tx) error {
		for i := range n {
			labels := map[string]string{}
			if i%100 == 99 {
				labels["rare"] = "yes"
			}
			if err := tx.Create(ctx, NewMachine(fmt.Sprintf("x-%04d", i), labels, MAC(2000+i))); err != nil {
				return err
			}
		}
		return nil
	})
	got, next = list(store.ListOptions{Selector: sel("rare"), Limit: 3})
	eq("sparse selector", got, []string{"x-0099", "x-0199", "x-0299"})
	if next != "x-0299" {
		t.Fatalf("sparse selector: next %q", next)
	}
	got, next = list(store.ListOptions{Selector: sel("rare"), Limit: 4, Continue: next})
	eq("sparse selector page 2", got, []string{"x-0399", "x-0499", "x-0599", "x-0699"})
	if next != "" {
		t.Fatalf("sparse selector page 2: next %q, want empty", next)
	}

	// Listed objects are copies.
	var first []*resource.Object
	view(t, st, func(tx store.Tx) error {
		var err error
		first, _, err = tx.List(ctx, "Machine", store.ListOptions{Limit: 1})
		return err
	})
	first[0].Metadata.Labels["rack"] = "changed"
	if g := mustGet(t, st, "Machine", first[0].Metadata.Name); g.Metadata.Labels["rack"] == "changed" {
		t.Fatal("listed objects share state with the store")
	}
}

var errAbort = errors.New("abort")

func testRollback(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	update(t, st, func(tx store.Tx) error {
		return tx.Create(ctx, NewMachine("keep", nil, "52:54:00:00:01:01"))
	})
	keep := mustGet(t, st, "Machine", "keep")
	err := st.Update(ctx, func(tx store.Tx) error {
		if err := tx.Create(ctx, NewMachine("gone", nil, "52:54:00:00:01:02")); err != nil {
			return err
		}
		k := keep.Clone()
		k.Spec = NewMachine("keep", nil, "52:54:00:00:01:03").Spec
		if err := tx.Update(ctx, k); err != nil {
			return err
		}
		if err := tx.AppendAudit(ctx, &audit.Entry{Actor: "t", Action: "create", Kind: "Machine", Name: "gone"}); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, &store.Event{Machine: "gone", Type: "created", Message: "x"}); err != nil {
			return err
		}
		if err := tx.CreateAPIToken(ctx, &store.APIToken{ID: "tok", Name: "n", Role: store.RoleAdmin, Hash: "h"}); err != nil {
			return err
		}
		// Within the transaction, all of it is visible.
		if _, err := tx.LookupKey(ctx, "Machine", "mac:52:54:00:00:01:02"); err != nil {
			return err
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("update: %v, want fn's error", err)
	}
	view(t, st, func(tx store.Tx) error {
		if _, err := tx.Get(ctx, "Machine", "gone"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("object: %v", err)
		}
		if g, err := tx.Get(ctx, "Machine", "keep"); err != nil || g.Metadata.ResourceVersion != "1" {
			t.Errorf("updated object: %+v, %v", g, err)
		}
		for _, mac := range []string{"52:54:00:00:01:02", "52:54:00:00:01:03"} {
			if _, err := tx.LookupKey(ctx, "Machine", "mac:"+mac); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("key %s: %v", mac, err)
			}
		}
		if o, err := tx.LookupKey(ctx, "Machine", "mac:52:54:00:00:01:01"); err != nil || o.Metadata.Name != "keep" {
			t.Errorf("released key: %v, %v", o, err)
		}
		if es, err := tx.ListAudit(ctx, 0, 0); err != nil || len(es) != 0 {
			t.Errorf("audit: %v, %v", es, err)
		}
		if seq, hash, err := tx.AuditHead(ctx); err != nil || seq != 0 || hash != "" {
			t.Errorf("audit head: %d %q %v", seq, hash, err)
		}
		if evs, err := tx.ListEvents(ctx, "gone", 0); err != nil || len(evs) != 0 {
			t.Errorf("events: %v, %v", evs, err)
		}
		if _, err := tx.GetAPIToken(ctx, "tok"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("token: %v", err)
		}
		return nil
	})

	// A panic in fn rolls back too (and the store stays usable).
	func() {
		defer func() { _ = recover() }()
		_ = st.Update(ctx, func(tx store.Tx) error {
			if err := tx.Create(ctx, profile("panic")); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	if _, err := get(t, st, "Profile", "panic"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after a panic: %v", err)
	}
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, profile("after")) })
}

func testReadOnlyView(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, profile("p")) })
	writes := map[string]func(tx store.Tx) error{
		"create": func(tx store.Tx) error { return tx.Create(ctx, profile("q")) },
		"create batch": func(tx store.Tx) error {
			_, err := tx.CreateBatch(ctx, []*resource.Object{profile("q")})
			return err
		},
		"update": func(tx store.Tx) error {
			p, err := tx.Get(ctx, "Profile", "p")
			if err != nil {
				return err
			}
			return tx.Update(ctx, p)
		},
		"delete": func(tx store.Tx) error { return tx.Delete(ctx, "Profile", "p", "") },
		"audit":  func(tx store.Tx) error { return tx.AppendAudit(ctx, &audit.Entry{Action: "x"}) },
		"event":  func(tx store.Tx) error { return tx.AddEvent(ctx, &store.Event{Machine: "m", Type: "x"}) },
		"token": func(tx store.Tx) error {
			return tx.CreateAPIToken(ctx, &store.APIToken{ID: "t", Role: store.RoleViewer})
		},
		"revoke": func(tx store.Tx) error { return tx.RevokeAPIToken(ctx, "t", time.Now()) },
	}
	for name, w := range writes {
		if err := st.View(ctx, w); err == nil {
			t.Errorf("%s in a view: no error", name)
		}
	}
	if g := mustGet(t, st, "Profile", "p"); g.Metadata.ResourceVersion != "1" {
		t.Errorf("a view changed the object: %+v", g.Metadata)
	}
	if _, err := get(t, st, "Profile", "q"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a view created an object: %v", err)
	}
}

func verifyAudit(t *testing.T, st store.Store) []audit.Entry {
	t.Helper()
	var entries []audit.Entry
	view(t, st, func(tx store.Tx) error {
		var err error
		if entries, err = tx.ListAudit(context.Background(), 0, 0); err != nil {
			return err
		}
		var v audit.Verifier
		for i := range entries {
			if err := v.Next(&entries[i]); err != nil {
				return err
			}
		}
		seq, hash, err := tx.AuditHead(context.Background())
		if err != nil {
			return err
		}
		if err := v.Finish(seq, hash); err != nil {
			return err
		}
		if v.Count() != int64(len(entries)) {
			return fmt.Errorf("verified %d of %d entries", v.Count(), len(entries))
		}
		return nil
	})
	return entries
}

func testAudit(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	view(t, st, func(tx store.Tx) error {
		seq, hash, err := tx.AuditHead(ctx)
		if err != nil || seq != 0 || hash != "" {
			return fmt.Errorf("empty head: %d %q %v", seq, hash, err)
		}
		return nil
	})
	when := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("X", 3600))
	var sealed []audit.Entry
	update(t, st, func(tx store.Tx) error {
		for i := range 3 {
			e := audit.Entry{Time: when.Add(time.Duration(i) * time.Second), Actor: "tok-1", Action: "create", Kind: "Machine", Name: fmt.Sprintf("m%d", i), Summary: "spec.interfaces"}
			if err := tx.AppendAudit(ctx, &e); err != nil {
				return err
			}
			if e.Seq != int64(i+1) || e.Hash == "" || e.Hash != audit.ComputeHash(&e) {
				return fmt.Errorf("sealed entry %+v", e)
			}
			sealed = append(sealed, e)
		}
		return nil
	})
	if sealed[0].PrevHash != audit.GenesisHash || sealed[1].PrevHash != sealed[0].Hash {
		t.Fatalf("chain links: %+v", sealed)
	}
	update(t, st, func(tx store.Tx) error {
		e := audit.Entry{Actor: "system", Action: "delete", Kind: "Lease", Name: "10.0.0.5"} // no time: now
		if err := tx.AppendAudit(ctx, &e); err != nil {
			return err
		}
		if e.Seq != 4 || e.PrevHash != sealed[2].Hash || e.Time.IsZero() {
			return fmt.Errorf("entry appended in a later transaction: %+v", e)
		}
		sealed = append(sealed, e)
		return nil
	})
	entries := verifyAudit(t, st)
	if len(entries) != 4 {
		t.Fatalf("%d entries, want 4", len(entries))
	}
	for i, e := range entries {
		w := sealed[i]
		if e.Seq != w.Seq || !e.Time.Equal(w.Time) || e.Actor != w.Actor || e.Action != w.Action || e.Kind != w.Kind ||
			e.Name != w.Name || e.Summary != w.Summary || e.PrevHash != w.PrevHash || e.Hash != w.Hash {
			t.Errorf("entry %d: got %+v, want %+v", i, e, w)
		}
	}
	view(t, st, func(tx store.Tx) error {
		seq, hash, err := tx.AuditHead(ctx)
		if err != nil || seq != 4 || hash != sealed[3].Hash {
			return fmt.Errorf("head: %d %q %v", seq, hash, err)
		}
		page, err := tx.ListAudit(ctx, 1, 2)
		if err != nil || len(page) != 2 || page[0].Seq != 2 || page[1].Seq != 3 {
			return fmt.Errorf("ListAudit(1, 2): %v %v", page, err)
		}
		page, err = tx.ListAudit(ctx, 4, 0)
		if err != nil || len(page) != 0 {
			return fmt.Errorf("ListAudit(4, 0): %v %v", page, err)
		}
		return nil
	})
}

func testEvents(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	var added []store.Event
	update(t, st, func(tx store.Tx) error {
		for i := range 6 {
			for _, m := range []string{"m1", "m2"} {
				e := store.Event{Machine: m, Time: t0.Add(time.Duration(i) * time.Minute), Type: "state", Message: fmt.Sprintf("%s step %d", m, i)}
				if err := tx.AddEvent(ctx, &e); err != nil {
					return err
				}
				if e.ID == 0 {
					return fmt.Errorf("event id not set")
				}
				if m == "m1" {
					added = append(added, e)
				}
			}
		}
		return nil
	})
	for i := 1; i < len(added); i++ {
		if added[i].ID <= added[i-1].ID {
			t.Fatalf("event ids do not increase: %v", added)
		}
	}
	view(t, st, func(tx store.Tx) error {
		evs, err := tx.ListEvents(ctx, "m1", 3)
		if err != nil {
			return err
		}
		if len(evs) != 3 {
			return fmt.Errorf("newest 3: got %d", len(evs))
		}
		for i, e := range evs {
			w := added[3+i]
			if e.ID != w.ID || e.Machine != "m1" || !e.Time.Equal(w.Time) || e.Type != w.Type || e.Message != w.Message || e.Time.Location() != time.UTC {
				return fmt.Errorf("event %d: got %+v, want %+v", i, e, w)
			}
		}
		all, err := tx.ListEvents(ctx, "m1", 0)
		if err != nil || len(all) != 6 || all[0].ID != added[0].ID {
			return fmt.Errorf("all events: %v %v", all, err)
		}
		none, err := tx.ListEvents(ctx, "m3", 10)
		if err != nil || len(none) != 0 {
			return fmt.Errorf("events of an unknown machine: %v %v", none, err)
		}
		return nil
	})
	update(t, st, func(tx store.Tx) error {
		e := store.Event{Machine: "m1", Type: "x"}
		if err := tx.AddEvent(ctx, &e); err != nil {
			return err
		}
		if e.Time.IsZero() {
			return fmt.Errorf("event time not set")
		}
		return nil
	})
	view(t, st, func(tx store.Tx) error {
		evs, err := tx.ListEvents(ctx, "m1", 1)
		if err != nil || len(evs) != 1 || evs[0].Type != "x" {
			return fmt.Errorf("newest event: %v %v", evs, err)
		}
		return nil
	})

	// Text any agent may send is stored, the same way on every backend.
	odd := store.Event{Machine: "m4", Type: "log", Message: "a\x00b\xffc ünïcode"}
	update(t, st, func(tx store.Tx) error { return tx.AddEvent(ctx, &odd) })
	view(t, st, func(tx store.Tx) error {
		evs, err := tx.ListEvents(ctx, "m4", 0)
		if err != nil || len(evs) != 1 || evs[0].Message != "a\uFFFDb\uFFFDc ünïcode" || evs[0].Message != odd.Message {
			return fmt.Errorf("odd text: %+v %v", evs, err)
		}
		return nil
	})
}

func testAPITokens(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	t0 := time.Date(2026, 5, 6, 7, 8, 9, 10, time.UTC)
	toks := []store.APIToken{
		{ID: "b2", Name: "ci", Role: store.RoleOperator, Hash: "hash-b", CreatedAt: t0.Add(time.Hour)},
		{ID: "a1", Name: "admin", Role: store.RoleAdmin, Hash: "hash-a", CreatedAt: t0},
		{ID: "c3", Name: "ro", Role: store.RoleViewer, Hash: "hash-c"}, // created now
	}
	update(t, st, func(tx store.Tx) error {
		for i := range toks {
			if err := tx.CreateAPIToken(ctx, &toks[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if toks[2].CreatedAt.IsZero() {
		t.Fatal("createdAt not set")
	}
	err := st.Update(ctx, func(tx store.Tx) error {
		return tx.CreateAPIToken(ctx, &store.APIToken{ID: "a1", Name: "again", Role: store.RoleAdmin, Hash: "x"})
	})
	wantErr(t, "create a token id twice", err, store.ErrExists)

	view(t, st, func(tx store.Tx) error {
		got, err := tx.GetAPIToken(ctx, "a1")
		if err != nil {
			return err
		}
		if got.ID != "a1" || got.Name != "admin" || got.Role != store.RoleAdmin || got.Hash != "hash-a" || !got.CreatedAt.Equal(t0) || got.RevokedAt != nil {
			return fmt.Errorf("get: %+v", got)
		}
		if _, err := tx.GetAPIToken(ctx, "zz"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("get missing: %v", err)
		}
		list, err := tx.ListAPITokens(ctx)
		if err != nil {
			return err
		}
		if len(list) != 3 || list[0].ID != "a1" || list[1].ID != "b2" || list[2].ID != "c3" || list[1].Hash != "hash-b" {
			return fmt.Errorf("list: %+v", list)
		}
		return nil
	})
	revoked := t0.Add(2 * time.Hour)
	update(t, st, func(tx store.Tx) error { return tx.RevokeAPIToken(ctx, "b2", revoked) })
	update(t, st, func(tx store.Tx) error { return tx.RevokeAPIToken(ctx, "b2", revoked.Add(time.Hour)) }) // keeps the first
	err = st.Update(ctx, func(tx store.Tx) error { return tx.RevokeAPIToken(ctx, "zz", revoked) })
	wantErr(t, "revoke missing", err, store.ErrNotFound)
	view(t, st, func(tx store.Tx) error {
		got, err := tx.GetAPIToken(ctx, "b2")
		if err != nil {
			return err
		}
		if got.RevokedAt == nil || !got.RevokedAt.Equal(revoked) {
			return fmt.Errorf("revokedAt %v, want %v", got.RevokedAt, revoked)
		}
		list, err := tx.ListAPITokens(ctx)
		if err != nil {
			return err
		}
		if list[0].RevokedAt != nil || list[1].RevokedAt == nil {
			return fmt.Errorf("list after revoke: %+v", list)
		}
		return nil
	})
}

func testConcurrentUpdates(t *testing.T, open func(t *testing.T) store.Store) {
	RunConcurrent(t, []store.Store{open(t)})
}

// RunConcurrent runs read-modify-write transactions that append audit entries from 8
// goroutines (25 each), spread over stores on one empty database (replicas), with
// readers alongside, and checks that no update or audit entry was lost and that the
// chain verifies.
func RunConcurrent(t *testing.T, stores []store.Store) {
	ctx := context.Background()
	const workers, perWorker = 8, 25
	counter := profile("counter")
	counter.Status = json.RawMessage(`{"n":0}`)
	update(t, stores[0], func(tx store.Tx) error { return tx.Create(ctx, counter) })

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		st := stores[w%len(stores)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				err := st.Update(ctx, func(tx store.Tx) error {
					// A read-modify-write: with serialized writers it never conflicts.
					c, err := tx.Get(ctx, "Profile", "counter")
					if err != nil {
						return err
					}
					var s struct{ N int }
					if err := json.Unmarshal(c.Status, &s); err != nil {
						return err
					}
					c.Status = json.RawMessage(fmt.Sprintf(`{"n":%d}`, s.N+1))
					if err := tx.Update(ctx, c); err != nil {
						return err
					}
					name := fmt.Sprintf("w%d-%d", w, i)
					if err := tx.Create(ctx, NewMachine(name, nil, MAC(w*1000+i))); err != nil {
						return err
					}
					return tx.AppendAudit(ctx, &audit.Entry{Actor: "t", Action: "create", Kind: "Machine", Name: name})
				})
				if err != nil {
					errs <- fmt.Errorf("worker %d, transaction %d: %w", w, i, err)
					return
				}
				// Readers run alongside.
				if err := st.View(ctx, func(tx store.Tx) error {
					_, err := tx.LookupKey(ctx, "Machine", "mac:"+MAC(w*1000+i))
					return err
				}); err != nil {
					errs <- fmt.Errorf("worker %d, view %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for _, st := range stores {
		entries := verifyAudit(t, st)
		if len(entries) != workers*perWorker {
			t.Fatalf("%d audit entries, want %d", len(entries), workers*perWorker)
		}
		c := mustGet(t, st, "Profile", "counter")
		if string(c.Status) != fmt.Sprintf(`{"n":%d}`, workers*perWorker) || c.Metadata.ResourceVersion != strconv.Itoa(workers*perWorker+1) {
			t.Fatalf("counter: %s, resourceVersion %s: updates were lost", c.Status, c.Metadata.ResourceVersion)
		}
		var objs []*resource.Object
		view(t, st, func(tx store.Tx) error {
			var err error
			objs, _, err = tx.List(ctx, "Machine", store.ListOptions{})
			return err
		})
		if len(objs) != workers*perWorker {
			t.Fatalf("%d machines, want %d", len(objs), workers*perWorker)
		}
	}
}

func testReopen(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	m := NewMachine("m", map[string]string{"a": "b"}, "52:54:00:00:02:01")
	update(t, st, func(tx store.Tx) error {
		if err := tx.Create(ctx, m); err != nil {
			return err
		}
		if err := tx.AppendAudit(ctx, &audit.Entry{Actor: "a", Action: "create", Kind: "Machine", Name: "m"}); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, &store.Event{Machine: "m", Type: "t", Message: "hello"}); err != nil {
			return err
		}
		return tx.CreateAPIToken(ctx, &store.APIToken{ID: "t1", Name: "n", Role: store.RoleAdmin, Hash: "h"})
	})
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	st = open(t) // the same database, migrations already applied
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("ping after reopen: %v", err)
	}
	got := mustGet(t, st, "Machine", "m")
	if got.Metadata.Labels["a"] != "b" || got.Metadata.ResourceVersion != "1" || !got.Metadata.CreatedAt.Equal(*m.Metadata.CreatedAt) {
		t.Fatalf("after reopen: %+v", got.Metadata)
	}
	view(t, st, func(tx store.Tx) error {
		if o, err := tx.LookupKey(ctx, "Machine", "mac:52:54:00:00:02:01"); err != nil || o.Metadata.Name != "m" {
			return fmt.Errorf("key after reopen: %v %v", o, err)
		}
		if evs, err := tx.ListEvents(ctx, "m", 0); err != nil || len(evs) != 1 || evs[0].Message != "hello" {
			return fmt.Errorf("events after reopen: %v %v", evs, err)
		}
		if _, err := tx.GetAPIToken(ctx, "t1"); err != nil {
			return fmt.Errorf("token after reopen: %v", err)
		}
		return nil
	})
	// The chain continues where it stopped.
	update(t, st, func(tx store.Tx) error {
		return tx.AppendAudit(ctx, &audit.Entry{Actor: "a", Action: "delete", Kind: "Machine", Name: "m"})
	})
	if n := len(verifyAudit(t, st)); n != 2 {
		t.Fatalf("%d audit entries after reopen, want 2", n)
	}
	update(t, st, func(tx store.Tx) error {
		got.Metadata.Labels = nil
		return tx.Update(ctx, got)
	})
	if got.Metadata.ResourceVersion != "2" {
		t.Fatalf("resourceVersion after reopen and update: %q", got.Metadata.ResourceVersion)
	}
}

// testKeysVersion: ListKeys lists a kind's keys by prefix; KeysVersion grows with
// every committed transaction that claims or releases a key, and with nothing else.
func testKeysVersion(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	version := func() int64 {
		t.Helper()
		var v int64
		err := st.View(ctx, func(tx store.Tx) error {
			var err error
			v, err = tx.KeysVersion(ctx)
			return err
		})
		if err != nil {
			t.Fatalf("KeysVersion: %v", err)
		}
		return v
	}
	keys := func(kind, prefix string) []string {
		t.Helper()
		var out []string
		err := st.View(ctx, func(tx store.Tx) error {
			var err error
			out, err = tx.ListKeys(ctx, kind, prefix)
			return err
		})
		if err != nil {
			t.Fatalf("ListKeys: %v", err)
		}
		return out
	}
	step := func(what string, changes bool, fn func(tx store.Tx) error) {
		t.Helper()
		before := version()
		err := st.Update(ctx, fn)
		after := version()
		if err != nil && !errors.Is(err, errRollback) {
			t.Fatalf("%s: %v", what, err)
		}
		if changes && after <= before || !changes && after != before {
			t.Fatalf("%s: keys version %d -> %d, want a change: %v", what, before, after, changes)
		}
	}
	if got := keys("Machine", "mac:"); len(got) != 0 {
		t.Fatalf("keys of an empty store: %v", got)
	}
	step("create a keyed machine", true, func(tx store.Tx) error {
		return tx.Create(ctx, NewMachine("m1", nil, "52:54:00:00:00:02", "52:54:00:00:00:01"))
	})
	step("create a machine without interfaces", false, func(tx store.Tx) error {
		return tx.Create(ctx, NewMachine("m0", nil))
	})
	step("create an unkeyed kind", false, func(tx store.Tx) error {
		return tx.Create(ctx, profile("p1"))
	})
	step("a rolled-back claim", false, func(tx store.Tx) error {
		if err := tx.Create(ctx, NewMachine("m2", nil, "52:54:00:00:00:09")); err != nil {
			return err
		}
		return errRollback
	})
	if got, want := keys("Machine", "mac:"), []string{"mac:52:54:00:00:00:01", "mac:52:54:00:00:00:02"}; !slices.Equal(got, want) {
		t.Fatalf("ListKeys = %v, want %v", got, want)
	}
	if got := keys("Machine", "mac:52:54:00:00:00:02"); !slices.Equal(got, []string{"mac:52:54:00:00:00:02"}) {
		t.Fatalf("ListKeys by a full key = %v", got)
	}
	if got := keys("Machine", "serial:"); len(got) != 0 {
		t.Fatalf("ListKeys of another prefix = %v", got)
	}
	if got := keys("Profile", ""); len(got) != 0 {
		t.Fatalf("ListKeys of another kind = %v", got)
	}
	step("update labels only", false, func(tx store.Tx) error {
		o, err := tx.Get(ctx, "Machine", "m1")
		if err != nil {
			return err
		}
		o.Metadata.Labels = map[string]string{"rack": "r1"}
		return tx.Update(ctx, o)
	})
	step("update a MAC", true, func(tx store.Tx) error {
		o, err := tx.Get(ctx, "Machine", "m1")
		if err != nil {
			return err
		}
		o.Spec = NewMachine("m1", nil, "52:54:00:00:00:03").Spec
		return tx.Update(ctx, o)
	})
	if got := keys("Machine", "mac:"); !slices.Equal(got, []string{"mac:52:54:00:00:00:03"}) {
		t.Fatalf("ListKeys after the update = %v", got)
	}
	step("delete the keyed machine", true, func(tx store.Tx) error { return tx.Delete(ctx, "Machine", "m1", "") })
	if got := keys("Machine", "mac:"); len(got) != 0 {
		t.Fatalf("ListKeys after the delete = %v", got)
	}
}

var errRollback = errors.New("roll back")

// testCreateBatch: CreateBatch stores new objects like Create, reports names that
// are taken (stored before, or twice in the batch) without failing, claims keys,
// and stores objects enough to need several statements.
func testCreateBatch(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, profile("a")) })
	before := mustGet(t, st, "Profile", "a")
	objs := []*resource.Object{profile("b"), profile("a"), profile("c"), profile("b"),
		NewMachine("m1", nil, "52:54:00:00:07:01"), NewMachine("m0", nil)}
	for i := range 600 {
		objs = append(objs, profile(fmt.Sprintf("bulk-%04d", i)))
	}
	var taken []bool
	update(t, st, func(tx store.Tx) error {
		var err error
		taken, err = tx.CreateBatch(ctx, objs)
		return err
	})
	for i, o := range objs {
		want := i == 1 || i == 3
		if taken[i] != want {
			t.Fatalf("object %d (%s): taken = %v, want %v", i, o.Metadata.Name, taken[i], want)
		}
		if !want && (o.Metadata.ResourceVersion != "1" || o.Metadata.CreatedAt == nil) {
			t.Fatalf("object %d (%s): metadata not set: %+v", i, o.Metadata.Name, o.Metadata)
		}
		if !want {
			got := mustGet(t, st, o.Kind, o.Metadata.Name)
			if got.Metadata.ResourceVersion != "1" || string(got.Spec) != string(o.Spec) {
				t.Fatalf("stored %s: %+v", o.Metadata.Name, got)
			}
		}
	}
	if got := mustGet(t, st, "Profile", "a"); got.Metadata.ResourceVersion != before.Metadata.ResourceVersion || !got.Metadata.CreatedAt.Equal(*before.Metadata.CreatedAt) {
		t.Fatalf("a taken name changed the stored object: %+v", got.Metadata)
	}
	err := st.View(ctx, func(tx store.Tx) error {
		o, err := tx.LookupKey(ctx, "Machine", "mac:52:54:00:00:07:01")
		if err != nil || o.Metadata.Name != "m1" {
			return fmt.Errorf("the batch's machine did not claim its MAC: %v %v", o, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A key conflict fails the call; with the transaction rolled back nothing stays.
	err = st.Update(ctx, func(tx store.Tx) error {
		_, err := tx.CreateBatch(ctx, []*resource.Object{profile("y"), NewMachine("m2", nil, "52:54:00:00:07:01")})
		return err
	})
	wantErr(t, "a batch claiming a taken MAC", err, store.ErrDuplicateKey)
	if _, err := get(t, st, "Profile", "y"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed batch left an object: %v", err)
	}
}

// testAnnotations: annotations are stored and returned beside the labels, replaced by
// an update, and never seen by a label selector.
func testAnnotations(t *testing.T, open func(t *testing.T) store.Store) {
	st := open(t)
	ctx := context.Background()
	annotations := map[string]string{
		"argocd.argoproj.io/tracking-id":                   "kiln:kiln.dev/Machine:default/web-1",
		"kubectl.kubernetes.io/last-applied-configuration": `{"kind":"Machine","metadata":{"name":"web-1"}}` + "\n",
		"note": `"quoted", é, \ and a tab\t`,
	}
	m := NewMachine("web-1", map[string]string{"role": "web"}, MAC(1))
	m.Metadata.Annotations = maps.Clone(annotations)
	bare := NewMachine("bare", nil, MAC(2))
	bare.Metadata.Annotations = map[string]string{"only": "annotations"}
	update(t, st, func(tx store.Tx) error {
		if err := tx.Create(ctx, m); err != nil {
			return err
		}
		return tx.Create(ctx, bare)
	})
	got := mustGet(t, st, "Machine", "web-1")
	if !maps.Equal(got.Metadata.Annotations, annotations) {
		t.Errorf("get: annotations %q\nwant %q", got.Metadata.Annotations, annotations)
	}
	if !maps.Equal(got.Metadata.Labels, map[string]string{"role": "web"}) {
		t.Errorf("get: labels %v, want only role=web", got.Metadata.Labels)
	}
	if g := mustGet(t, st, "Machine", "bare"); len(g.Metadata.Labels) != 0 || g.Metadata.Annotations["only"] != "annotations" {
		t.Errorf("annotations without labels: labels %v annotations %v", g.Metadata.Labels, g.Metadata.Annotations)
	}
	// List returns them too, and a selector sees the labels only.
	sel, err := resource.ParseSelector("role=web")
	if err != nil {
		t.Fatal(err)
	}
	var listed []*resource.Object
	err = st.View(ctx, func(tx store.Tx) error {
		var err error
		listed, _, err = tx.List(ctx, "Machine", store.ListOptions{Selector: sel})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].Metadata.Name != "web-1" || !maps.Equal(listed[0].Metadata.Annotations, annotations) {
		t.Errorf("list role=web: %d objects, first %+v", len(listed), listed)
	}
	// Update replaces them; clearing them keeps the labels.
	got.Metadata.Annotations = map[string]string{"note": "v2"}
	update(t, st, func(tx store.Tx) error { return tx.Update(ctx, got) })
	if g := mustGet(t, st, "Machine", "web-1"); !maps.Equal(g.Metadata.Annotations, map[string]string{"note": "v2"}) {
		t.Errorf("after update: annotations %v", g.Metadata.Annotations)
	}
	got.Metadata.Annotations = nil
	update(t, st, func(tx store.Tx) error { return tx.Update(ctx, got) })
	if g := mustGet(t, st, "Machine", "web-1"); len(g.Metadata.Annotations) != 0 || g.Metadata.Labels["role"] != "web" {
		t.Errorf("after clearing: annotations %v labels %v", g.Metadata.Annotations, g.Metadata.Labels)
	}
	// The change log (watches, webhooks) carries each write's annotations, a
	// delete's as they were.
	update(t, st, func(tx store.Tx) error { return tx.Delete(ctx, "Machine", "bare", "") })
	var changes []store.Change
	err = st.View(ctx, func(tx store.Tx) error {
		var err error
		changes, err = tx.ChangesAfter(ctx, "Machine", 0, 100)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ, name   string
		annotations map[string]string
	}{
		{store.ChangeAdded, "web-1", annotations},
		{store.ChangeAdded, "bare", map[string]string{"only": "annotations"}},
		{store.ChangeModified, "web-1", map[string]string{"note": "v2"}},
		{store.ChangeModified, "web-1", nil},
		{store.ChangeDeleted, "bare", map[string]string{"only": "annotations"}},
	}
	if len(changes) != len(want) {
		t.Fatalf("change log: %d changes, want %d", len(changes), len(want))
	}
	for i, w := range want {
		c := changes[i]
		if c.Type != w.typ || c.Object.Metadata.Name != w.name || !maps.Equal(c.Object.Metadata.Annotations, w.annotations) {
			t.Errorf("change %d: %s %s annotations %q, want %s %s annotations %q", i, c.Type, c.Object.Metadata.Name, c.Object.Metadata.Annotations, w.typ, w.name, w.annotations)
		}
		if w.name == "web-1" && !maps.Equal(c.Object.Metadata.Labels, map[string]string{"role": "web"}) {
			t.Errorf("change %d: labels %v, want only role=web", i, c.Object.Metadata.Labels)
		}
	}
}
