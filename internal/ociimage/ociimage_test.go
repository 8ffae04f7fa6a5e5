package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

func testOptions(t *testing.T, binary string) Options {
	t.Helper()
	return Options{Binary: binary, Version: "v1.2.3", Revision: "abcdef", Arch: "amd64", Tag: "v1.2.3",
		Created: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
}

func fakeBinary(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kiln")
	if err := os.WriteFile(p, []byte("#!/bin/false\nnot really kiln\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// readTree returns every file of a layout by its path.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// Two builds from the same inputs are byte-identical; another time is another image.
func TestBuildIsReproducible(t *testing.T) {
	opts := testOptions(t, fakeBinary(t))
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	da, err := Build(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a wall-clock time in the output would now differ
	db, err := Build(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	if da.Digest != db.Digest {
		t.Fatalf("two builds: manifests %s and %s", da.Digest, db.Digest)
	}
	ta, tb := readTree(t, a), readTree(t, b)
	if len(ta) != len(tb) || len(ta) != 5 { // oci-layout, index.json, 3 blobs
		t.Fatalf("layouts hold %d and %d files, want 5", len(ta), len(tb))
	}
	for p, data := range ta {
		if !bytes.Equal(data, tb[p]) {
			t.Errorf("%s differs between two builds", p)
		}
	}
	opts.Created = opts.Created.Add(time.Second)
	dc, err := Build(filepath.Join(t.TempDir(), "c"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if dc.Digest == da.Digest {
		t.Errorf("another -created gave the same image")
	}
}

// The layout's documents and the layer hold what the runtime and Kubernetes rely
// on: a non-root user that exists in /etc/passwd, its private data dir, the
// binary as the entrypoint, the ports, the OCI labels.
func TestImageContent(t *testing.T) {
	opts := testOptions(t, fakeBinary(t))
	dir := t.TempDir()
	desc, err := Build(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != desc.Digest || idx.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3" ||
		idx.Manifests[0].Platform == nil || idx.Manifests[0].Platform.Architecture != "amd64" || idx.MediaType != MediaTypeIndex {
		t.Fatalf("index: %+v", idx)
	}
	blob := func(d string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var m Manifest
	if err := json.Unmarshal(blob(desc.Digest), &m); err != nil {
		t.Fatal(err)
	}
	if m.SchemaVersion != 2 || m.Config.MediaType != MediaTypeConfig || len(m.Layers) != 1 || m.Layers[0].MediaType != MediaTypeLayerGz {
		t.Fatalf("manifest: %+v", m)
	}
	var cfg Config
	if err := json.Unmarshal(blob(m.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if c.User != "65532:65532" || strings.Join(c.Entrypoint, " ") != "/usr/bin/kiln" || strings.Join(c.Cmd, " ") != "serve" || cfg.Created != "2026-12-01T10:00:00Z" {
		t.Errorf("config: %+v created %s", c, cfg.Created)
	}
	for _, p := range []string{"8080/tcp", "8443/tcp", "67/udp", "69/udp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed", p)
		}
	}
	for k, want := range map[string]string{"org.opencontainers.image.version": "v1.2.3", "org.opencontainers.image.revision": "abcdef",
		"org.opencontainers.image.source": "https://github.com/kilnhq/kiln", "org.opencontainers.image.licenses": "Apache-2.0"} {
		if c.Labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], want)
		}
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(m.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if got := "sha256:" + sha256hex(raw); len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != got {
		t.Errorf("diff_ids %v, the layer's tar is %s", cfg.RootFS.DiffIDs, got)
	}
	type file struct {
		mode     int64
		uid, gid int
		body     string
	}
	files := map[string]file{}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(opts.Created) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, opts.Created)
		}
		body, _ := io.ReadAll(tr)
		files[h.Name] = file{h.Mode, h.Uid, h.Gid, string(body)}
	}
	want := map[string]file{
		"usr/bin/kiln":  {0o755, 0, 0, "#!/bin/false\nnot really kiln\n"},
		"var/lib/kiln/": {0o700, UID, GID, ""},
		"etc/kiln/":     {0o755, 0, 0, ""},
		"tmp/":          {0o1777, 0, 0, ""},
	}
	for name, w := range want {
		if g, ok := files[name]; !ok || g != w {
			t.Errorf("%s: %+v (present %v), want %+v", name, g, ok, w)
		}
	}
	if !strings.Contains(files["etc/passwd"].body, "kiln:x:65532:65532:Kiln:/var/lib/kiln:/sbin/nologin\n") ||
		!strings.Contains(files["etc/group"].body, "kiln:x:65532:\n") {
		t.Errorf("passwd %q group %q", files["etc/passwd"].body, files["etc/group"].body)
	}
}

func TestBuildNeedsItsInputs(t *testing.T) {
	for _, o := range []Options{{Arch: "amd64", Tag: "x"}, {Binary: "b", Tag: "x"}, {Binary: "b", Arch: "amd64"}} {
		if _, err := Build(t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "required") {
			t.Errorf("Build(%+v): %v", o, err)
		}
	}
	if _, err := Build(t.TempDir(), Options{Binary: "/nonexistent/kiln", Arch: "amd64", Tag: "x"}); err == nil || !strings.Contains(err.Error(), "read the kiln binary") {
		t.Errorf("missing binary: %v", err)
	}
}

// With the real tools: skopeo reads the layout, umoci unpacks it, and the static
// binary runs in the unpacked root as the image's user.
func TestImageRunsWithRealTools(t *testing.T) {
	testkit.NeedRoot(t, "umoci unpack and chroot")
	skopeo := testkit.NeedTool(t, "skopeo", "skopeo")
	umoci := testkit.NeedTool(t, "umoci", "umoci")
	chroot := testkit.NeedTool(t, "chroot", "coreutils")
	testkit.Slow(t, "builds a static kiln binary")
	bin := filepath.Join(t.TempDir(), "kiln")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/kilnhq/kiln/cmd/kiln")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a static kiln: %v\n%s", err, out)
	}
	opts := testOptions(t, bin)
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		opts.CABundle = "/etc/ssl/certs/ca-certificates.crt"
	}
	work := t.TempDir()
	layout := filepath.Join(work, "oci")
	desc, err := Build(layout, opts)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(skopeo, "inspect", "oci:"+layout+":v1.2.3").CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, out)
	}
	var inspected struct {
		Digest, Architecture, Os string
		Labels                   map[string]string
		Layers                   []string
	}
	if err := json.Unmarshal(out, &inspected); err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, out)
	}
	if inspected.Digest != desc.Digest || inspected.Architecture != "amd64" || inspected.Os != "linux" || len(inspected.Layers) != 1 ||
		inspected.Labels["org.opencontainers.image.version"] != "v1.2.3" {
		t.Errorf("skopeo inspect: %+v", inspected)
	}
	bundle := filepath.Join(work, "bundle")
	if out, err := exec.Command(umoci, "unpack", "--image", layout+":v1.2.3", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	// umoci's runtime config carries the image's user.
	rt, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Process struct {
			User struct{ UID, GID int }
			Args []string
		}
	}
	if err := json.Unmarshal(rt, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Process.User.UID != UID || spec.Process.User.GID != GID || strings.Join(spec.Process.Args, " ") != "/usr/bin/kiln serve" {
		t.Errorf("runtime config: user %+v args %q", spec.Process.User, spec.Process.Args)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	st, err := os.Stat(filepath.Join(rootfs, "var", "lib", "kiln"))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("unpacked /var/lib/kiln: %v %v", st, err)
	}
	out, err = exec.Command(chroot, "--userspec=65532:65532", rootfs, "/usr/bin/kiln", "version", "--client").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "kiln ") || !strings.Contains(string(out), "platform: linux/amd64") {
		t.Fatalf("kiln version in the unpacked image: %v\n%s", err, out)
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestMain(m *testing.M) { os.Exit(testkit.Main(m.Run)) }
