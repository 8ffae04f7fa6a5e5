package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 18 item 7: the annotations Argo CD, Flux and kubectl add survive apply, get
// -o yaml (which re-applies unchanged), diff and edit; apiVersion is kiln.dev/v1 only.
func TestAnnotationsThroughCLI(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	manifest := `apiVersion: kiln.dev/v1
kind: Profile
metadata:
  name: gitops
  annotations:
    argocd.argoproj.io/tracking-id: "kiln:kiln.dev/Profile:kiln/gitops"
    argocd.argoproj.io/sync-options: Prune=false
    kustomize.toolkit.fluxcd.io/name: fleet
    kustomize.toolkit.fluxcd.io/namespace: flux-system
    note: "two words: and \"quotes\""
spec: {boot: {agent: true}}
`
	if out := s.MustKiln(manifest, "apply", "-f", "-"); !strings.Contains(out, "profile/gitops created") {
		t.Fatalf("apply: %q", out)
	}
	yml := s.MustKiln("", "get", "profile", "gitops", "-o", "yaml")
	for _, want := range []string{
		"  annotations:\n",
		"    argocd.argoproj.io/tracking-id: kiln:kiln.dev/Profile:kiln/gitops\n",
		"    kustomize.toolkit.fluxcd.io/name: fleet\n",
		`    note: 'two words: and "quotes"'` + "\n",
	} {
		if !strings.Contains(yml, want) {
			t.Errorf("get -o yaml lacks %q:\n%s", want, yml)
		}
	}
	// What get prints applies back as no change, and diff sees none.
	if out := s.MustKiln(yml, "apply", "-f", "-"); !strings.Contains(out, "profile/gitops unchanged") {
		t.Errorf("re-apply of get -o yaml: %q", out)
	}
	if out := s.MustKiln(manifest, "diff", "-f", "-"); out != "" {
		t.Errorf("diff of the applied manifest: %q", out)
	}
	changed := strings.Replace(manifest, "Prune=false", "Prune=true", 1)
	out, stderr, code := kilnAt(t, s, nil, changed, "diff", "-f", "-")
	if code != 1 || !strings.Contains(out, "-    argocd.argoproj.io/sync-options: Prune=false\n") || !strings.Contains(out, "+    argocd.argoproj.io/sync-options: Prune=true\n") {
		t.Errorf("diff of a changed annotation: exit %d %q:\n%s", code, stderr, out)
	}
	// edit keeps the annotations it did not touch.
	dir := t.TempDir()
	editor := filepath.Join(dir, "editor")
	if err := os.WriteFile(editor, []byte("#!/bin/sh\nsed -i 's/namespace: flux-system/namespace: flux-2/' \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := kilnAt(t, s, []string{"EDITOR=" + editor}, "", "edit", "profile", "gitops"); code != 0 || out != "profile/gitops edited\n" {
		t.Fatalf("edit: exit %d %q %q", code, out, stderr)
	}
	yml = s.MustKiln("", "get", "profile", "gitops", "-o", "yaml")
	if !strings.Contains(yml, "kustomize.toolkit.fluxcd.io/namespace: flux-2\n") || !strings.Contains(yml, "argocd.argoproj.io/tracking-id:") {
		t.Errorf("after edit:\n%s", yml)
	}
	// A bad key or another apiVersion is refused with the field, and nothing changes.
	for _, c := range []struct{ doc, want string }{
		{strings.Replace(manifest, "note:", "'bad key':", 1), `metadata.annotations: "bad key" is not a valid annotation key`},
		{strings.Replace(manifest, "kiln.dev/v1", "apps/v1", 1), `apiVersion: "apps/v1" is not supported`},
	} {
		_, stderr, code := kilnAt(t, s, nil, c.doc, "apply", "-f", "-")
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("apply: exit %d, stderr %q, want %q", code, stderr, c.want)
		}
	}
	if again := s.MustKiln("", "get", "profile", "gitops", "-o", "yaml"); again != yml {
		t.Errorf("a refused apply changed the profile:\n%s", again)
	}
}
