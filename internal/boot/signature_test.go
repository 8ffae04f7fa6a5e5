package boot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/minisign"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// minisignKey makes a key pair with the real minisign binary.
func minisignKey(t *testing.T, dir, name string) (pub minisign.PublicKey, sec string) {
	t.Helper()
	testkit.NeedTool(t, "minisign", "minisign")
	pubPath, sec := filepath.Join(dir, name+".pub"), filepath.Join(dir, name+".key")
	if out, err := exec.Command("minisign", "-G", "-W", "-p", pubPath, "-s", sec).CombinedOutput(); err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(pubPath)
	pub, err := minisign.ParsePublicKey(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return pub, sec
}

// minisignSign signs content (written to a scratch file) and returns the .minisig text.
func minisignSign(t *testing.T, sec string, content []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, content, 0o644)
	if out, err := exec.Command("minisign", "-S", "-s", sec, "-m", f, "-t", "kiln test artifact").CombinedOutput(); err != nil {
		t.Fatalf("minisign -S: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(f + ".minisig")
	return string(b)
}

// artifactYAML is an Artifact with a signature as a YAML block scalar.
func artifactYAML(name, source, sig string) string {
	m := fmt.Sprintf("---\nkind: Artifact\nmetadata: {name: %s}\nspec:\n  source: %q\n", name, source)
	if sig != "" {
		m += "  signature: |\n    " + strings.ReplaceAll(strings.TrimRight(sig, "\n"), "\n", "\n    ") + "\n"
	}
	return m
}

type signedEnv struct {
	*env
	remote *httptest.Server
}

// newSignedEnv serves artifacts with the given trusted keys; machine web-1 (MAC
// 52:54:00:00:00:01) gets the events.
func newSignedEnv(t *testing.T, keys minisign.KeyRing, files map[string][]byte, manifest string) *signedEnv {
	t.Helper()
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(remote.Close)
	manifest = strings.ReplaceAll(manifest, "REMOTE", remote.URL)
	kst := testkit.NewStore(t, manifest+"---\nkind: Machine\nmetadata: {name: web-1}\nspec:\n  interfaces: [{mac: \"52:54:00:00:00:01\"}]\n")
	art := filepath.Join(t.TempDir(), "artifacts")
	os.MkdirAll(art, 0o755)
	for name, b := range files {
		os.WriteFile(filepath.Join(art, name), b, 0o644)
	}
	loopback, _ := boot.ParseSourcePolicy([]string{"127.0.0.1"})
	b := &boot.Server{Inventory: kst.Inv, Artifacts: &boot.ArtifactStore{Dir: art, Recorder: kst.Inv, Sources: loopback, TrustedKeys: keys}}
	mux := http.NewServeMux()
	b.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &signedEnv{env: &env{t: t, inv: kst.Inv, srv: srv, dir: art}, remote: remote}
}

func (e *signedEnv) lastEvent() store.Event {
	e.t.Helper()
	evs, err := e.inv.Events(context.Background(), "web-1", 100)
	if err != nil || len(evs) == 0 {
		e.t.Fatalf("events of web-1: %v (%d)", err, len(evs))
	}
	return evs[len(evs)-1]
}

func (e *signedEnv) recordedSHA256(name string) string {
	e.t.Helper()
	a, err := e.inv.Get(context.Background(), "Artifact", name)
	if err != nil {
		e.t.Fatal(err)
	}
	var st struct {
		SHA256 string `json:"sha256"`
	}
	json.Unmarshal(a.Status, &st)
	return st.SHA256
}

// TestArtifactSignatures: with --artifact-key, an artifact is served only if its
// minisign signature (made by the real tool) verifies with a trusted key. Refused:
// one byte changed, another key, a changed trusted comment, no signature; each with
// an ArtifactRefused event, a 403, no byte of the file and no recorded sha256 (so
// the agent is never handed the digest of unverified content).
func TestArtifactSignatures(t *testing.T) {
	dir := t.TempDir()
	trusted, sec := minisignKey(t, dir, "ops")
	_, otherSec := minisignKey(t, dir, "other")
	good := []byte(strings.Repeat("signed kernel ", 5000))
	changed := append([]byte{}, good...)
	changed[1234] ^= 1
	sig := minisignSign(t, sec, good)
	lines := strings.Split(strings.TrimSpace(sig), "\n")
	commentChanged := strings.Join([]string{lines[0], lines[1], "trusted comment: kiln test artifact (edited)", lines[3]}, "\n")

	files := map[string][]byte{"good": good, "changed": changed, "remote-good": good, "remote-bad": changed}
	manifest := artifactYAML("good", "good", sig) +
		artifactYAML("changed", "changed", sig) +
		artifactYAML("otherkey", "good", minisignSign(t, otherSec, good)) +
		artifactYAML("comment", "good", commentChanged) +
		artifactYAML("unsigned", "good", "") +
		artifactYAML("remote-good", "REMOTE/remote-good", sig) +
		artifactYAML("remote-bad", "REMOTE/remote-bad", sig)
	e := newSignedEnv(t, minisign.KeyRing{trusted}, files, manifest)

	for _, name := range []string{"good", "remote-good"} {
		code, body := e.get("/artifacts/" + name + "?mac=52-54-00-00-00-01")
		if code != 200 || body != string(good) {
			t.Fatalf("%s: %d, %d bytes; want the signed file", name, code, len(body))
		}
		// The fetch is recorded after the body is sent: wait for it (bounded).
		ev := e.lastEvent()
		for i := 0; i < 100 && !(ev.Type == "ArtifactFetched" && strings.HasPrefix(ev.Message, name+":")); i++ {
			time.Sleep(20 * time.Millisecond)
			ev = e.lastEvent()
		}
		if ev.Type != "ArtifactFetched" || !strings.HasPrefix(ev.Message, name+":") {
			t.Errorf("%s: last event %s %q", name, ev.Type, ev.Message)
		}
		if e.recordedSHA256(name) == "" {
			t.Errorf("%s: no sha256 recorded after a verified serve", name)
		}
	}
	for _, c := range []struct{ name, want string }{
		{"changed", "the file is not what was signed"},
		{"otherkey", "does not trust"},
		{"comment", "trusted comment was changed"},
		{"unsigned", "unsigned"},
		{"remote-bad", "the file is not what was signed"},
	} {
		code, body := e.get("/artifacts/" + c.name + "?mac=52-54-00-00-00-01")
		if code != http.StatusForbidden || strings.Contains(body, "signed kernel") {
			t.Errorf("%s: %d %.40q, want 403 and none of the file", c.name, code, body)
		}
		ev := e.lastEvent()
		if ev.Type != "ArtifactRefused" || !strings.Contains(ev.Message, c.name+":") || !strings.Contains(ev.Message, c.want) {
			t.Errorf("%s: last event %s %q, want ArtifactRefused with %q", c.name, ev.Type, ev.Message, c.want)
		}
		if sum := e.recordedSHA256(c.name); sum != "" {
			t.Errorf("%s: sha256 %s recorded for content that failed its signature", c.name, sum)
		}
	}
	// The badly signed download was not kept in the remote cache.
	entries, _ := os.ReadDir(filepath.Join(e.dir, ".remote"))
	if len(entries) != 1 {
		t.Errorf("remote cache holds %d files, want only the verified one", len(entries))
	}

	// Re-applying a verified artifact with a tampered signature is caught although
	// its content was verified and cached before.
	ctx := context.Background()
	if err := e.inv.Store.Update(ctx, func(tx store.Tx) error {
		a, err := tx.Get(ctx, "Artifact", "good")
		if err != nil {
			return err
		}
		var spec resource.ArtifactSpec
		json.Unmarshal(a.Spec, &spec)
		spec.Signature = commentChanged
		a.Spec, _ = json.Marshal(spec)
		return tx.Update(ctx, a)
	}); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.get("/artifacts/good"); code != http.StatusForbidden {
		t.Errorf("verified artifact re-applied with a tampered signature: %d, want 403", code)
	}
}

// TestArtifactSignatureWithoutKeys: a signed artifact on a server that trusts no
// key is refused (a signature Kiln cannot check is not ignored); an unsigned one is
// served as before.
func TestArtifactSignatureWithoutKeys(t *testing.T) {
	_, sec := minisignKey(t, t.TempDir(), "ops")
	b := []byte("kernel")
	e := newSignedEnv(t, nil, map[string][]byte{"k": b},
		artifactYAML("signed", "k", minisignSign(t, sec, b))+artifactYAML("plain", "k", ""))
	if code, body := e.get("/artifacts/signed"); code != http.StatusForbidden {
		t.Errorf("signed, no keys: %d %q, want 403", code, body)
	}
	if code, body := e.get("/artifacts/plain"); code != 200 || body != "kernel" {
		t.Errorf("unsigned, no keys: %d %q", code, body)
	}
}

// TestArtifactSignatureApplyValidation: a malformed signature is refused at apply,
// naming spec.signature.
func TestArtifactSignatureApplyValidation(t *testing.T) {
	for name, sig := range map[string]string{
		"truncated": "untrusted comment: x\nRUQ+iybNMoh7Wy9s6Jy9Qhxlv1AwxXDua3rXkVcx6nms0zfZ\ntrusted comment: t\n0q+cNrDykp+DYMGmQfPdDQ66bO/mDByKW3oT0Uy3e+D+dEv1CBPlLA9YEWtV9gw+QOwITNvtd2m/dVC3lL2yDQ==\n",
		"garbage":   "not a signature",
	} {
		objs, err := resource.ParseManifests(strings.NewReader(artifactYAML("a", "k", sig)), "test")
		if err == nil {
			_, err = resource.Typed[resource.ArtifactSpec](objs[0])
			if err == nil {
				spec, _ := resource.Typed[resource.ArtifactSpec](objs[0])
				err = spec.Validate()
			}
		}
		if err == nil || !strings.Contains(err.Error(), "spec.signature") {
			t.Errorf("%s: %v, want an error naming spec.signature", name, err)
		}
	}
}
