package inventory_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// base is in the store before each case: a profile and one machine.
const base = `
kind: Profile
metadata: {name: worker}
spec: {boot: {agent: true}}
---
kind: Machine
metadata: {name: web-1, labels: {role: web}}
spec:
  profile: worker
  interfaces: [{mac: "52:54:00:00:00:01"}]
`

func TestApply(t *testing.T) {
	cases := []struct {
		name     string
		manifest string
		// want is each object's outcome; nil with wantErr.
		want    map[string]string
		wantErr string
		// summaries are the new audit entries' summaries, by object name; each must
		// hold every path listed and none of the values.
		summaries map[string][]string
		values    []string
	}{
		{
			name:      "create",
			manifest:  "kind: Machine\nmetadata: {name: web-2, labels: {rack: r7}}\nspec: {profile: worker, interfaces: [{mac: '52:54:00:00:00:02'}]}\n",
			want:      map[string]string{"web-2": inventory.Created},
			summaries: map[string][]string{"web-2": {"created: ", "metadata.labels.rack", "spec.interfaces", "spec.profile"}},
			values:    []string{"r7", "52:54:00:00:00:02", "worker"},
		},
		{
			name:      "update",
			manifest:  "kind: Machine\nmetadata: {name: web-1, labels: {role: db}}\nspec: {profile: worker, interfaces: [{mac: '52:54:00:00:00:09'}]}\n",
			want:      map[string]string{"web-1": inventory.Updated},
			summaries: map[string][]string{"web-1": {"changed: ", "metadata.labels.role", "spec.interfaces[0].mac"}},
			values:    []string{"db", "52:54:00:00:00:09", "52:54:00:00:00:01"},
		},
		{
			name:      "annotation added",
			manifest:  "kind: Machine\nmetadata: {name: web-1, labels: {role: web}, annotations: {argocd.argoproj.io/sync-wave: '3'}}\nspec: {profile: worker, interfaces: [{mac: '52:54:00:00:00:01'}]}\n",
			want:      map[string]string{"web-1": inventory.Updated},
			summaries: map[string][]string{"web-1": {"changed: ", "metadata.annotations.argocd.argoproj.io/sync-wave"}},
			values:    []string{"'3'"},
		},
		{
			name:     "no-op",
			manifest: base,
			want:     map[string]string{"worker": inventory.Unchanged, "web-1": inventory.Unchanged},
		},
		{
			name: "unknown reference refused, nothing written",
			manifest: "kind: Machine\nmetadata: {name: web-3}\nspec: {profile: worker}\n---\n" +
				"kind: Machine\nmetadata: {name: web-4}\nspec: {profile: nope}\n---\n" +
				"kind: Machine\nmetadata: {name: web-1, labels: {role: changed}}\nspec: {profile: worker}\n",
			wantErr: `machine "web-4": spec.profile: profile "nope" does not exist`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			kit := testkit.NewStore(t, base)
			before := testkit.AuditLog(t, kit.Store)
			web1, err := kit.Inv.Get(ctx, "Machine", "web-1")
			if err != nil {
				t.Fatal(err)
			}

			results, err := testkit.Apply(ctx, kit.Inv, tc.manifest)
			if tc.wantErr != "" {
				var ve *inventory.ValidationError
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &ve) {
					t.Fatalf("apply: %v, want a validation error with %q", err, tc.wantErr)
				}
				if after := testkit.AuditLog(t, kit.Store); len(after) != len(before) {
					t.Errorf("a refused apply wrote %d audit entries", len(after)-len(before))
				}
				for _, name := range []string{"web-3", "web-4"} {
					if _, err := kit.Inv.Get(ctx, "Machine", name); !errors.Is(err, store.ErrNotFound) {
						t.Errorf("machine %s after a refused apply: %v, want not found", name, err)
					}
				}
				now, _ := kit.Inv.Get(ctx, "Machine", "web-1")
				if now.Metadata.ResourceVersion != web1.Metadata.ResourceVersion || now.Metadata.Labels["role"] != "web" {
					t.Errorf("web-1 changed by a refused apply: %+v", now.Metadata)
				}
				return
			}
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			got := map[string]string{}
			for _, r := range results {
				got[r.Name] = r.Outcome
			}
			if len(got) != len(tc.want) {
				t.Errorf("outcomes %v, want %v", got, tc.want)
			}
			for name, want := range tc.want {
				if got[name] != want {
					t.Errorf("%s: outcome %q, want %q", name, got[name], want)
				}
			}

			added := testkit.AuditLog(t, kit.Store)[len(before):]
			if len(added) != len(tc.summaries) {
				t.Fatalf("%d new audit entries %+v, want %d", len(added), added, len(tc.summaries))
			}
			for _, e := range added {
				paths, ok := tc.summaries[e.Name]
				if !ok {
					t.Errorf("unexpected audit entry for %s: %q", e.Name, e.Summary)
					continue
				}
				if e.Actor != "test" {
					t.Errorf("audit actor %q, want the applying actor", e.Actor)
				}
				for _, p := range paths {
					if !strings.Contains(e.Summary, p) {
						t.Errorf("audit summary %q lacks %q", e.Summary, p)
					}
				}
				for _, v := range tc.values {
					if strings.Contains(e.Summary, v) {
						t.Errorf("audit summary %q carries the value %q", e.Summary, v)
					}
				}
			}
		})
	}
}

// An apply stores annotations; applying the same manifest again is a no-op, and
// one that drops them clears them (the manifest is the whole operator-owned state).
func TestApplyAnnotations(t *testing.T) {
	ctx := context.Background()
	kit := testkit.NewStore(t, base)
	with := "kind: Machine\nmetadata: {name: web-1, labels: {role: web}, annotations: {kustomize.toolkit.fluxcd.io/name: fleet, note: 'a b'}}\nspec: {profile: worker, interfaces: [{mac: '52:54:00:00:00:01'}]}\n"
	for i, want := range []string{inventory.Updated, inventory.Unchanged} {
		res, err := testkit.Apply(ctx, kit.Inv, with)
		if err != nil || len(res) != 1 || res[0].Outcome != want {
			t.Fatalf("apply %d: %+v %v, want %s", i+1, res, err, want)
		}
	}
	got, err := kit.Inv.Get(ctx, "Machine", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Metadata.Annotations["kustomize.toolkit.fluxcd.io/name"] != "fleet" || got.Metadata.Annotations["note"] != "a b" || len(got.Metadata.Annotations) != 2 {
		t.Errorf("stored annotations %v", got.Metadata.Annotations)
	}
	res, err := testkit.Apply(ctx, kit.Inv, base)
	if err != nil || res[1].Outcome != inventory.Updated {
		t.Fatalf("apply without annotations: %+v %v, want web-1 updated", res, err)
	}
	if got, _ := kit.Inv.Get(ctx, "Machine", "web-1"); len(got.Metadata.Annotations) != 0 {
		t.Errorf("annotations left after an apply without them: %v", got.Metadata.Annotations)
	}
}
