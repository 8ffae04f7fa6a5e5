package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

func object(kind, name, spec string, labels map[string]string) *resource.Object {
	return &resource.Object{Kind: kind, Metadata: resource.Metadata{Name: name, Labels: labels}, Spec: json.RawMessage(spec)}
}

// TestServiceWrites walks the inventory service's writes on one SQLite store, one
// step after another: what each returns, what is stored, and how many audit
// entries and machine events it leaves. A refused write leaves nothing: no
// object, no audit entry, no event.
func TestServiceWrites(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir(), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := &Service{Store: st}
	actor := Actor{ID: "token:test", Role: "admin"}

	get := func(kind, name string) *resource.Object {
		t.Helper()
		var o *resource.Object
		err := st.View(ctx, func(tx store.Tx) error {
			var err error
			o, err = tx.Get(ctx, kind, name)
			return err
		})
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	counts := func() (auditEntries, events int) {
		t.Helper()
		err := st.View(ctx, func(tx store.Tx) error {
			entries, err := tx.ListAudit(ctx, 0, 1000)
			if err != nil {
				return err
			}
			evs, err := tx.ListEvents(ctx, "web-1", 1000)
			auditEntries, events = len(entries), len(evs)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return auditEntries, events
	}
	rv := func() string { return get("Machine", "web-1").Metadata.ResourceVersion }
	web1 := func(labels map[string]string, profile, resourceVersion string) *resource.Object {
		o := object("Machine", "web-1", `{"profile":"`+profile+`","interfaces":[{"mac":"52:54:00:00:00:01"}]}`, labels)
		o.Metadata.ResourceVersion = resourceVersion
		return o
	}
	apply := func(objs ...*resource.Object) func() (string, error) {
		return func() (string, error) {
			res, err := svc.Apply(ctx, actor, objs)
			var out []string
			for _, r := range res {
				out = append(out, r.Kind+"/"+r.Name+" "+r.Outcome)
			}
			return strings.Join(out, ", "), err
		}
	}
	update := func(o func() *resource.Object) func() (string, error) {
		return func() (string, error) {
			_, err := svc.Update(ctx, actor, o())
			return "", err
		}
	}

	steps := []struct {
		name               string
		do                 func() (string, error)
		want               string // the results, for Apply
		wantErr            error  // errors.Is; nil: any error when wantErrText is set
		wantErrText        string
		auditDelta, events int // audit entries added, web-1's events after the step
		check              func(t *testing.T)
	}{
		{name: "apply a profile and a machine", do: apply(object("Profile", "worker", `{"boot":{"agent":true}}`, nil), web1(nil, "worker", "")),
			want: "Profile/worker created, Machine/web-1 created", auditDelta: 2, events: 1,
			check: func(t *testing.T) {
				if s := string(get("Machine", "web-1").Status); s != `{"state":"new"}` {
					t.Errorf("new machine's status %s, want state new", s)
				}
				if s := get("Profile", "worker").Status; len(s) != 0 {
					t.Errorf("new profile's status %s, want none", s)
				}
			}},
		{name: "apply: the second machine's profile is missing", do: apply(
			object("Machine", "web-2", `{"profile":"worker","interfaces":[{"mac":"52:54:00:00:00:02"}]}`, nil),
			object("Machine", "web-3", `{"profile":"nope","interfaces":[{"mac":"52:54:00:00:00:03"}]}`, nil)),
			wantErrText: "nope", events: 1,
			check: func(t *testing.T) {
				if get("Machine", "web-2") != nil {
					t.Error("web-2 stored although its batch was refused")
				}
			}},
		{name: "apply: a profile's kernel artifact is missing", do: apply(object("Profile", "kernel-boot", `{"boot":{"kernel":"no-such-kernel"}}`, nil)),
			wantErrText: "no-such-kernel", events: 1},
		{name: "apply: a join token's profile is missing", do: apply(object("JoinToken", "jt-1", `{"profile":"nope","maxUses":1}`, nil)),
			wantErrText: "nope", events: 1},
		{name: "apply with a stale resourceVersion", do: apply(web1(map[string]string{"rack": "r1"}, "worker", "999999")),
			wantErr: store.ErrConflict, wantErrText: `update machine "web-1"`, events: 1},
		{name: "apply with the stored resourceVersion", do: func() (string, error) { return apply(web1(map[string]string{"rack": "r1"}, "worker", rv()))() },
			want: "Machine/web-1 configured", auditDelta: 1, events: 2},
		{name: "apply the same again", do: apply(web1(map[string]string{"rack": "r1"}, "worker", "")),
			want: "Machine/web-1 unchanged", events: 2},
		{name: "update with a stale resourceVersion", do: update(func() *resource.Object { return web1(map[string]string{"rack": "r2"}, "worker", "999999") }),
			wantErr: store.ErrConflict, events: 2},
		{name: "update with the stored resourceVersion", do: update(func() *resource.Object { return web1(map[string]string{"rack": "r2"}, "worker", rv()) }),
			auditDelta: 1, events: 3,
			check: func(t *testing.T) {
				if got := get("Machine", "web-1").Metadata.Labels["rack"]; got != "r2" {
					t.Errorf("rack label %q after update, want r2", got)
				}
			}},
		{name: "update to a missing profile", do: update(func() *resource.Object { return web1(map[string]string{"rack": "r2"}, "nope", "") }),
			wantErrText: "nope", events: 3},
		{name: "delete a missing artifact", do: func() (string, error) { return "", svc.Delete(ctx, actor, "Artifact", "nope", "") },
			wantErr: store.ErrNotFound, wantErrText: `delete artifact "nope"`, events: 3},
		{name: "delete the machine", do: func() (string, error) { return "", svc.Delete(ctx, actor, "Machine", "web-1", "") },
			auditDelta: 1, events: 3,
			check: func(t *testing.T) {
				if get("Machine", "web-1") != nil {
					t.Error("web-1 still stored after delete")
				}
				var types []string
				if err := st.View(ctx, func(tx store.Tx) error {
					evs, err := tx.ListEvents(ctx, "web-1", 10)
					for _, ev := range evs {
						types = append(types, ev.Type)
					}
					return err
				}); err != nil {
					t.Fatal(err)
				}
				slices.Sort(types)
				if want := []string{"InventoryCreate", "InventoryUpdate", "InventoryUpdate"}; !slices.Equal(types, want) {
					t.Errorf("web-1's event types %v, want %v", types, want)
				}
			}},
	}
	for _, s := range steps {
		auditBefore, _ := counts()
		got, err := s.do()
		switch {
		case s.wantErr != nil && !errors.Is(err, s.wantErr):
			t.Errorf("%s: err %v, want %v", s.name, err, s.wantErr)
		case s.wantErrText != "" && (err == nil || !strings.Contains(err.Error(), s.wantErrText)):
			t.Errorf("%s: err %v, want one naming %q", s.name, err, s.wantErrText)
		case s.wantErr == nil && s.wantErrText == "" && err != nil:
			t.Errorf("%s: %v", s.name, err)
		}
		if got != s.want {
			t.Errorf("%s: results %q, want %q", s.name, got, s.want)
		}
		auditAfter, events := counts()
		if auditAfter-auditBefore != s.auditDelta || events != s.events {
			t.Errorf("%s: %d audit entries added and web-1 has %d events, want %d and %d", s.name, auditAfter-auditBefore, events, s.auditDelta, s.events)
		}
		if s.check != nil {
			s.check(t)
		}
	}
}
