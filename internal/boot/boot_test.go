package boot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

type env struct {
	t   *testing.T
	inv *inventory.Service
	srv *httptest.Server
	dir string
}

const manifests = `
kind: Artifact
metadata: {name: vmlinuz}
spec: {source: vmlinuz}
---
kind: Artifact
metadata: {name: initrd}
spec: {source: sub/initrd.img}
---
kind: Artifact
metadata: {name: escape}
spec: {source: ../outside}
---
kind: Profile
metadata: {name: installer}
spec:
  boot:
    kernel: vmlinuz
    initrds: [initrd]
    cmdline: "console=ttyS0 hostname={{ .Machine.Name }} ip={{ .Machine.IP }} role={{ index .Machine.Labels \"role\" }} kiln={{ .ServerURL }}"
---
kind: Profile
metadata: {name: broken}
spec:
  boot:
    kernel: vmlinuz
    cmdline: "x={{ .Machine.Nope }}"
---
kind: Machine
metadata: {name: web-1, labels: {role: web}}
spec:
  profile: installer
  interfaces: [{mac: "52:54:00:00:00:01", ip: 10.0.0.11}]
---
kind: Machine
metadata: {name: web-2}
spec:
  profile: broken
  interfaces: [{mac: "52:54:00:00:00:02"}]
---
kind: Machine
metadata: {name: bare}
spec:
  interfaces: [{mac: "52:54:00:00:00:03"}]
`

func newEnv(t *testing.T, policy boot.Policy) *env {
	t.Helper()
	inv := testkit.NewStore(t, manifests).Inv
	dir := t.TempDir()
	art := filepath.Join(dir, "artifacts")
	os.MkdirAll(filepath.Join(art, "sub"), 0o755)
	os.WriteFile(filepath.Join(art, "vmlinuz"), []byte(strings.Repeat("K", 100000)), 0o644)
	os.WriteFile(filepath.Join(art, "sub", "initrd.img"), []byte(strings.Repeat("I", 5000)), 0o644)
	os.WriteFile(filepath.Join(dir, "outside"), []byte("secret"), 0o644)
	// The remote sources these tests fetch are httptest servers on loopback,
	// which Kiln refuses unless allow-listed.
	loopback, err := boot.ParseSourcePolicy([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	b := &boot.Server{Inventory: inv, Artifacts: &boot.ArtifactStore{Dir: art, Recorder: inv, Sources: loopback}, Policy: policy}
	mux := http.NewServeMux()
	b.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{t: t, inv: inv, srv: srv, dir: art}
}

func (e *env) get(path string) (int, string) {
	e.t.Helper()
	resp, err := http.Get(e.srv.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) setState(name, state string) {
	e.t.Helper()
	ctx := context.Background()
	err := e.inv.Store.Update(ctx, func(tx store.Tx) error {
		m, err := tx.Get(ctx, "Machine", name)
		if err != nil {
			return err
		}
		m.Status = json.RawMessage(`{"state":"` + state + `"}`)
		return tx.Update(ctx, m)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func TestScripts(t *testing.T) {
	e := newEnv(t, boot.Policy{})
	code, gen := e.get("/boot.ipxe")
	if code != 200 || !strings.HasPrefix(gen, "#!ipxe\n") || !strings.Contains(gen, e.srv.URL+"/ipxe?mac=${mac:hexhyp}&uuid=${uuid}&buildarch=${buildarch}&platform=${platform}") {
		t.Fatalf("generic script: %d\n%s", code, gen)
	}
	host := e.srv.URL
	cases := []struct {
		name, query string
		want        []string
		not         []string
	}{
		{"new machine installs", "mac=52-54-00-00-00-01&buildarch=x86_64&platform=pcbios", []string{
			"kernel " + host + "/artifacts/vmlinuz?mac=52-54-00-00-00-01 initrd=initrd console=ttyS0 hostname=web-1 ip=10.0.0.11 role=web kiln=" + host + " || goto failed",
			"initrd --name initrd " + host + "/artifacts/initrd?mac=52-54-00-00-00-01 || goto failed",
			"boot || goto failed",
		}, []string{"exit\n:"}},
		{"unknown machine exits", "mac=52-54-00-99-99-99", []string{"unknown machine 52:54:00:99:99:99", "\nexit\n"}, []string{"kernel"}},
		{"no profile boots local disk", "mac=52:54:00:00:00:03", []string{"booting from local disk", "\nexit\n"}, []string{"kernel"}},
		{"template error is reported, not half-rendered", "mac=52-54-00-00-00-02", []string{"Kiln cannot boot this machine", "reboot"}, []string{"kernel"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := e.get("/ipxe?" + c.query)
			if code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
			for _, w := range c.want {
				if !strings.Contains(body, w) {
					t.Errorf("script lacks %q:\n%s", w, body)
				}
			}
			for _, n := range c.not {
				if strings.Contains(body, n) {
					t.Errorf("script has %q:\n%s", n, body)
				}
			}
		})
	}
	e.setState("web-1", resource.StateProvisioned)
	if _, body := e.get("/ipxe?mac=52-54-00-00-00-01"); !strings.Contains(body, "web-1 is provisioned; booting from local disk\nexit\n") {
		t.Fatalf("provisioned machine:\n%s", body)
	}
	e.setState("web-1", resource.StateFailed)
	if _, body := e.get("/ipxe?mac=52-54-00-00-00-01"); !strings.Contains(body, "exit") || strings.Contains(body, "kernel") {
		t.Fatalf("failed machine boots local disk by default:\n%s", body)
	}
	if code, _ := e.get("/ipxe?mac=zz"); code != 400 {
		t.Fatalf("bad mac: %d", code)
	}
	evs, _ := e.inv.Events(context.Background(), "web-1", 10)
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	if !strings.Contains(strings.Join(types, ","), "BootScript") {
		t.Fatalf("no BootScript event: %v", types)
	}
}

func TestDiscoveryPolicy(t *testing.T) {
	e := newEnv(t, boot.Policy{DiscoveryProfile: "installer"})
	_, body := e.get("/ipxe?mac=52-54-00-99-99-99")
	if !strings.Contains(body, "kernel "+e.srv.URL+"/artifacts/vmlinuz") || !strings.Contains(body, "hostname= ip= role=") {
		t.Fatalf("discovery script:\n%s", body)
	}
}

func TestArtifactsVerifiedRangeETag(t *testing.T) {
	e := newEnv(t, boot.Policy{})
	code, body := e.get("/artifacts/vmlinuz?mac=52-54-00-00-00-01")
	if code != 200 || len(body) != 100000 {
		t.Fatalf("artifact: %d, %d bytes", code, len(body))
	}
	// The digest is recorded on first serve.
	a, _ := e.inv.Get(context.Background(), "Artifact", "vmlinuz")
	sum := sha256.Sum256([]byte(strings.Repeat("K", 100000)))
	if !strings.Contains(string(a.Status), hex.EncodeToString(sum[:])) {
		t.Fatalf("sha256 not recorded: %s", a.Status)
	}
	evs, _ := e.inv.Events(context.Background(), "web-1", 10)
	if len(evs) == 0 || evs[len(evs)-1].Type != "ArtifactFetched" || !strings.Contains(evs[len(evs)-1].Message, "100000 bytes") {
		t.Fatalf("fetch event: %+v", evs)
	}

	curl := testkit.NeedTool(t, "curl", "curl")
	// Range, with a real client.
	out, err := exec.Command(curl, "-sS", "-r", "10-19", "-D", "-", e.srv.URL+"/artifacts/vmlinuz").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "206 Partial Content") || !strings.HasSuffix(string(out), "KKKKKKKKKK") || !strings.Contains(string(out), "Content-Range: bytes 10-19/100000") {
		t.Fatalf("range: %v\n%s", err, out)
	}
	// ETag and If-None-Match.
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	out, _ = exec.Command(curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "If-None-Match: "+etag, e.srv.URL+"/artifacts/vmlinuz").CombinedOutput()
	if string(out) != "304" {
		t.Fatalf("If-None-Match: %s", out)
	}
	out, _ = exec.Command(curl, "-sSI", e.srv.URL+"/artifacts/vmlinuz").CombinedOutput()
	if !strings.Contains(string(out), "Content-Length: 100000") || !strings.Contains(string(out), "Etag: "+etag) {
		t.Fatalf("HEAD headers:\n%s", out)
	}

	// A file that changed after its digest was recorded is refused, with an event.
	os.WriteFile(filepath.Join(e.dir, "vmlinuz"), []byte(strings.Repeat("X", 100000)), 0o644)
	code, body = e.get("/artifacts/vmlinuz?mac=52-54-00-00-00-01")
	if code != 500 || strings.Contains(body, "XXXX") {
		t.Fatalf("tampered artifact served: %d %.40q", code, body)
	}
	evs, _ = e.inv.Events(context.Background(), "web-1", 10)
	if last := evs[len(evs)-1]; last.Type != "ArtifactRefused" || !strings.Contains(last.Message, "does not match its recorded sha256") {
		t.Fatalf("refusal event: %+v", last)
	}
	// Sources may not leave the artifact directory.
	if code, body := e.get("/artifacts/escape"); code == 200 || strings.Contains(body, "secret") {
		t.Fatalf("escape: %d %q", code, body)
	}
	if code, _ := e.get("/artifacts/nope"); code != 404 {
		t.Fatalf("missing artifact: %d", code)
	}
}

// TestScriptCache: profiles and artifacts are reused for CacheTTL, the machine is
// read on every request, and a changed profile is served once the TTL passed.
func TestScriptCache(t *testing.T) {
	kit := testkit.NewStore(t, manifests)
	inv := kit.Inv
	apply := func(m string) {
		t.Helper()
		kit.Apply(t, m)
	}
	b := &boot.Server{Inventory: inv, CacheTTL: 300 * time.Millisecond}
	mux := http.NewServeMux()
	b.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	script := func() string {
		resp, err := http.Get(srv.URL + "/ipxe?mac=52-54-00-00-00-01")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if s := script(); !strings.Contains(s, "console=ttyS0 hostname=web-1") {
		t.Fatalf("script:\n%s", s)
	}
	changed := strings.Replace(manifests, "console=ttyS0", "console=tty1", 1)
	apply(changed)
	if s := script(); !strings.Contains(s, "console=ttyS0") {
		t.Errorf("within the TTL the cached profile is served:\n%s", s)
	}
	apply(strings.Replace(changed, "role: web", "role: db", 1)) // the machine is not cached
	if s := script(); !strings.Contains(s, "role=db") {
		t.Errorf("machine changes are served at once:\n%s", s)
	}
	time.Sleep(350 * time.Millisecond)
	if s := script(); !strings.Contains(s, "console=tty1 hostname=web-1") {
		t.Errorf("after the TTL the new profile is served:\n%s", s)
	}
}

// TestRemoteArtifactsVerifiedCopy: an artifact whose source is an http URL is
// fetched by Kiln once, checked against its declared sha256 (or recorded, when it
// declared none) and served from Kiln's copy with Range; a source whose content
// changed is refused (500 and an event), never served; an unreachable source is a
// 502. iPXE never gets a redirect to the source.
func TestRemoteArtifactsVerifiedCopy(t *testing.T) {
	e := newEnv(t, boot.Policy{})
	ctx := context.Background()
	var mu sync.Mutex
	content := map[string]string{"/kernel": strings.Repeat("R", 70000), "/initrd": strings.Repeat("S", 3000)}
	hits := map[string]int{}
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		c, ok := content[r.URL.Path]
		hits[r.URL.Path]++
		mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.URL.Path == "/slow" {
			time.Sleep(200 * time.Millisecond) // the requests below arrive meanwhile
		}
		io.WriteString(w, c)
	}))
	defer remote.Close()
	content["/slow"] = strings.Repeat("Z", 1000)
	ksum := sha256.Sum256([]byte(content["/kernel"]))
	m := fmt.Sprintf(`kind: Artifact
metadata: {name: rkernel}
spec: {source: %q, sha256: %s}
---
kind: Artifact
metadata: {name: rinitrd}
spec: {source: %q}
---
kind: Artifact
metadata: {name: rgone}
spec: {source: %q}
---
kind: Artifact
metadata: {name: rslow}
spec: {source: %q}
`, remote.URL+"/kernel", hex.EncodeToString(ksum[:]), remote.URL+"/initrd", "http://127.0.0.1:1/nothing", remote.URL+"/slow")
	objs, err := resource.ParseManifests(strings.NewReader(m), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.inv.Apply(ctx, inventory.Actor{ID: "test"}, objs); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return errors.New("redirected") }}
	get := func(path string, hdr ...string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}

	for range 3 {
		if code, body, _ := get("/artifacts/rkernel"); code != 200 || body != content["/kernel"] {
			t.Fatalf("remote kernel: %d, %d bytes", code, len(body))
		}
	}
	if code, body, h := get("/artifacts/rkernel", "Range", "bytes=5-9"); code != 206 || body != "RRRRR" || h.Get("Content-Range") != "bytes 5-9/70000" {
		t.Fatalf("range on the copy: %d %q %v", code, body, h)
	}
	if hits["/kernel"] != 1 {
		t.Fatalf("the source was fetched %d times for 4 requests, want once", hits["/kernel"])
	}
	// Machines booting at once share one download.
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, body, _ := get("/artifacts/rslow"); code != 200 || len(body) != 1000 {
				t.Errorf("concurrent fetch: %d, %d bytes", code, len(body))
			}
		}()
	}
	wg.Wait()
	if hits["/slow"] != 1 {
		t.Fatalf("10 concurrent requests fetched the source %d times, want once", hits["/slow"])
	}
	// No declared digest: the first fetch records it.
	if code, body, _ := get("/artifacts/rinitrd"); code != 200 || body != content["/initrd"] {
		t.Fatalf("remote initrd: %d %d bytes", code, len(body))
	}
	isum := sha256.Sum256([]byte(content["/initrd"]))
	if a, _ := e.inv.Get(ctx, "Artifact", "rinitrd"); !strings.Contains(string(a.Status), hex.EncodeToString(isum[:])) {
		t.Fatalf("digest not recorded: %s", a.Status)
	}

	// Kiln's copy damaged on disk: fetched again from the source, then served.
	copyPath := filepath.Join(e.dir, ".remote", hex.EncodeToString(ksum[:]))
	if err := os.WriteFile(copyPath, []byte(strings.Repeat("Q", 70000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := get("/artifacts/rkernel"); code != 200 || body != content["/kernel"] {
		t.Fatalf("after the copy was damaged: %d, %.20q", code, body)
	}
	if hits["/kernel"] != 2 {
		t.Fatalf("the damaged copy was not fetched again (%d fetches)", hits["/kernel"])
	}
	// The source changes and Kiln's copy is gone (a new server, a cleaned cache):
	// the new content does not match and is refused.
	mu.Lock()
	content["/kernel"] = strings.Repeat("X", 70000)
	content["/initrd"] = strings.Repeat("Y", 3000)
	mu.Unlock()
	if err := os.RemoveAll(filepath.Join(e.dir, ".remote")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"rkernel", "rinitrd"} {
		code, body, _ := get("/artifacts/" + name + "?mac=52-54-00-00-00-01")
		if code != 500 || strings.Contains(body, "XXXX") || strings.Contains(body, "YYYY") {
			t.Fatalf("%s with changed content: %d %.40q", name, code, body)
		}
	}
	evs, _ := e.inv.Events(ctx, "web-1", 10)
	if last := evs[len(evs)-1]; last.Type != "ArtifactRefused" || !strings.Contains(last.Message, "does not match its recorded sha256") {
		t.Fatalf("refusal event: %+v", last)
	}
	if code, _, _ := get("/artifacts/rgone"); code != 502 {
		t.Fatalf("unreachable source: %d, want 502", code)
	}
}

// TestPrefetchRemoteArtifacts: Prefetch fetches remote artifacts into the verified
// cache once, skips local ones, and names the ones it could not fetch.
func TestPrefetchRemoteArtifacts(t *testing.T) {
	var hits int
	var mu sync.Mutex
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		io.WriteString(w, "kernel bytes")
	}))
	defer remote.Close()
	sum := sha256.Sum256([]byte("kernel bytes"))
	obj := func(name, spec string) *resource.Object {
		return &resource.Object{Kind: "Artifact", Metadata: resource.Metadata{Name: name}, Spec: json.RawMessage(spec)}
	}
	objs := []*resource.Object{
		obj("k", fmt.Sprintf(`{"source": %q, "sha256": %q}`, remote.URL+"/k", hex.EncodeToString(sum[:]))),
		obj("local", `{"source": "vmlinuz"}`),
		obj("gone", `{"source": "http://127.0.0.1:1/x"}`),
	}
	a := &boot.ArtifactStore{Dir: t.TempDir(), Sources: mustPolicy(t, "127.0.0.1")}
	for i := range 2 {
		n, err := a.Prefetch(context.Background(), objs)
		if n != 1 || err == nil || !strings.Contains(err.Error(), `artifact "gone"`) || strings.Contains(err.Error(), "local") {
			t.Fatalf("prefetch %d: %d ready, %v", i, n, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(a.Dir, ".remote", hex.EncodeToString(sum[:]))); err != nil || string(b) != "kernel bytes" {
		t.Fatalf("cached copy: %q %v", b, err)
	}
	if hits != 1 {
		t.Fatalf("the source was fetched %d times by two prefetches, want once", hits)
	}
}
