package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/secrets"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// secretServer serves the secret routes (without the API's authentication, which
// its own tests cover) on an SQLite store.
func secretServer(t *testing.T) (*globalFlags, *inventory.Service) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	st := testkit.OpenSQLite(t, dir)
	keys, err := secrets.LoadKeyRing(filepath.Join(dir, secrets.KEKFileName))
	if err != nil {
		t.Fatal(err)
	}
	// Handle URLs name Kiln's HTTPS listener (none runs here: the CLI only reads a
	// handle's status, over loopback).
	svc := &secrets.Service{Store: st, Keys: keys, HandleURL: "https://kiln.test:8443"}
	srv := &secrets.Server{Service: svc, Identity: func(r *http.Request) (string, bool) {
		m := r.Header.Get("X-Test-Machine")
		return m, m != ""
	}, Actor: func(*http.Request) inventory.Actor { return inventory.Actor{ID: "token:cli-test"} }}
	mux := http.NewServeMux()
	srv.RegisterOperator(func(method, path, role, summary string, h http.HandlerFunc) { mux.HandleFunc(method+" "+path, h) })
	srv.RegisterPublic(mux)
	srv.RegisterAgent(mux, nil)
	// The generic object routes the secret commands also use.
	inv := &inventory.Service{Store: st}
	mux.HandleFunc("GET /api/v1/secrets", func(w http.ResponseWriter, r *http.Request) {
		items, _, err := inv.List(r.Context(), "Secret", store.ListOptions{})
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		writeTestJSON(w, map[string]any{"items": items})
	})
	mux.HandleFunc("GET /api/v1/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		obj, err := inv.Get(r.Context(), "Secret", r.PathValue("name"))
		if err != nil {
			w.WriteHeader(404)
			writeTestJSON(w, map[string]any{"error": err.Error(), "code": 404})
			return
		}
		writeTestJSON(w, obj)
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return &globalFlags{server: hs.URL, token: "t", dataDir: dir, timeout: 10 * time.Second}, inv
}

func runCmd(t *testing.T, cmd *cobra.Command, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestSecretCommands(t *testing.T) {
	g, inv := secretServer(t)
	const value = "cli-TEST-value\x00with binary\n"
	sec := func(stdin string, args ...string) (string, string, error) {
		return runCmd(t, newSecretCmd(g), stdin, args...)
	}
	out, _, err := sec(value, "set", "db", "--from-file", "-")
	if err != nil || out != "secret/db version 1 set\n" {
		t.Fatalf("set from stdin: %q %v", out, err)
	}
	out, errOut, err := sec("", "set", "db", "--from-literal", "second")
	if err != nil || out != "secret/db version 2 set\n" || !strings.Contains(errOut, "process list") {
		t.Fatalf("set from literal: %q %q %v", out, errOut, err)
	}
	for _, args := range [][]string{{"set", "db"}, {"set", "db", "--from-file", "-", "--from-literal", "x"}, {"set", "db", "--from-file", "/nonexistent"}} {
		if _, _, err := sec("", args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	if _, _, err := sec("", "set", "db", "--from-file", "-"); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty stdin: %v", err)
	}
	// Metadata: rules and versions, no value.
	out, _, err = sec("", "get", "db")
	if err != nil || !strings.Contains(out, "no release rules") || !regexp.MustCompile(`(?m)^\s+2\s+\S+ \S+\s+token:cli-test\s+[0-9a-f]{16}$`).MatchString(out) || strings.Contains(out, "cli-TEST") {
		t.Fatalf("get:\n%s %v", out, err)
	}
	// Reveal: the value byte for byte, newest or a version.
	if out, _, err = sec("", "get", "db", "--reveal", "--version", "1"); err != nil || out != value {
		t.Fatalf("reveal v1: %q %v", out, err)
	}
	if out, _, err = sec("", "get", "db", "--reveal"); err != nil || out != "second" {
		t.Fatalf("reveal: %q %v", out, err)
	}
	out, _, err = sec("", "list")
	if err != nil || !strings.Contains(out, "db") || !strings.Contains(out, "VERSION") {
		t.Fatalf("list:\n%s %v", out, err)
	}
	out, _, err = sec("", "audit", "db")
	if err != nil || strings.Count(out, "set-value") != 2 || strings.Count(out, "reveal ") != 2 || strings.Contains(out, "second") {
		t.Fatalf("audit:\n%s %v", out, err)
	}
	out, _, err = sec("", "rotate-key")
	if err != nil || !strings.Contains(out, "2 data keys re-wrapped") {
		t.Fatalf("rotate-key: %q %v", out, err)
	}
	if out, _, err = sec("", "get", "db", "--reveal", "--version", "1"); err != nil || out != value {
		t.Fatalf("reveal after rotation: %q %v", out, err)
	}
	// A machine and a profile to render for, and a handle to look up.
	objs, err := resource.ParseManifests(strings.NewReader(`
kind: Artifact
metadata: {name: k}
spec: {source: /k}
---
kind: Secret
metadata: {name: db}
spec: {machines: [web-1]}
---
kind: Profile
metadata: {name: p}
spec:
  boot: {kernel: k}
  secrets: [db]
  configs:
    ignition: '{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/x", "contents": {"source": {{ secret "db" | dataURL | toJson }}}}]}}'
    files: {url: '{{ secretURL "db" }}'}
---
kind: Machine
metadata: {name: web-1}
spec: {profile: p}
`), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inv.Apply(context.Background(), inventory.Actor{ID: "t"}, objs); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = runCmd(t, newRenderCmd(g), "", "machine", "web-1", "--kind", "ignition")
	if err != nil || !strings.Contains(out, `"version": "3.3.0"`) || !strings.Contains(errOut, "secret db v2 via inline") || strings.Contains(out, "second") {
		t.Fatalf("render:\n%s\n%s %v", out, errOut, err)
	}
	if _, _, err := runCmd(t, newRenderCmd(g), "", "profile", "p"); err == nil {
		t.Fatal("render of a profile")
	}
	// A real handle (as the machine gets it) and its status.
	req, _ := http.NewRequest("GET", g.server+"/config/files/url", nil)
	req.Header.Set("X-Test-Machine", "web-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	resp.Body.Close()
	handle := buf.String()
	out, _, err = sec("", "handle-status", handle)
	if err != nil || !strings.Contains(out, "Machine:  web-1") || !strings.Contains(out, "Used:     no") {
		t.Fatalf("handle-status of %q:\n%s %v", handle, out, err)
	}
	// Delete: refused while the profile refers to it.
	if _, _, err := sec("", "delete", "db"); err == nil || !strings.Contains(err.Error(), "still refers to it") {
		t.Fatalf("delete a referenced secret: %v", err)
	}
}

func writeTestJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
