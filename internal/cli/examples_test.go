package cli_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// examplesDir is the example fleet, applied as the README says.
const examplesDir = "../../examples/"

// exampleProfile is what the test reads of a profile: the configs it renders.
type exampleProfile struct {
	Spec struct {
		Configs *struct {
			Ignition  string            `json:"ignition"`
			CloudInit map[string]string `json:"cloudInit"`
			Files     map[string]string `json:"files"`
		} `json:"configs"`
	} `json:"spec"`
}

// renderArgs are `kiln render machine` arguments (kind and part) for every config of
// a profile, in a stable order.
func renderArgs(p exampleProfile) [][2]string {
	c := p.Spec.Configs
	if c == nil {
		return nil
	}
	var out [][2]string
	if c.Ignition != "" {
		out = append(out, [2]string{"ignition", ""})
	}
	for _, part := range slices.Sorted(maps.Keys(c.CloudInit)) {
		out = append(out, [2]string{"cloud-init", part})
	}
	for _, name := range slices.Sorted(maps.Keys(c.Files)) {
		out = append(out, [2]string{"file", name})
	}
	return out
}

// Issue 19 item 3: examples/ applies unchanged, and every example machine's configs
// render (secrets masked) once the secrets it may receive have values.
func TestExamplesApplyAndRender(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	stdout, stderr, code := kilnAt(t, s, nil, "", "apply", "-f", examplesDir)
	if code != 0 {
		t.Fatalf("apply -f %s: exit %d\n%s%s", examplesDir, code, stdout, stderr)
	}
	if n := strings.Count(stdout, " created\n"); n < 15 {
		t.Errorf("apply created %d objects, want the whole fleet:\n%s", n, stdout)
	}
	// The only warnings: the agent's artifacts, which kiln image build --apply makes.
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if line != "" && !strings.Contains(line, `artifact "kiln-agent-kernel" does not exist`) && !strings.Contains(line, `artifact "kiln-agent-initrd" does not exist`) {
			t.Errorf("apply warned about something else than the agent's artifacts: %q", line)
		}
	}

	// Values for the secrets the configs reference (never printed: render masks them).
	values := map[string]string{"web-tls-key": "example-web-tls-key-value", "ci-runner-token": "example-ci-runner-token-value"}
	dir := t.TempDir()
	for name, v := range values {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		s.MustKiln("", "secret", "set", name, "--from-file", f)
	}

	machines := strings.Fields(s.MustKiln("", "get", "machines", "-o", "name"))
	if len(machines) != 4 {
		t.Fatalf("machines: %v, want the example's four", machines)
	}
	for _, m := range machines {
		name := strings.TrimPrefix(m, "machine/")
		var mach struct {
			Spec struct {
				Profile string `json:"profile"`
			} `json:"spec"`
		}
		if err := json.Unmarshal([]byte(s.MustKiln("", "get", "machine", name, "-o", "json")), &mach); err != nil {
			t.Fatal(err)
		}
		var prof exampleProfile
		if err := json.Unmarshal([]byte(s.MustKiln("", "get", "profile", mach.Spec.Profile, "-o", "json")), &prof); err != nil {
			t.Fatal(err)
		}
		targets := renderArgs(prof)
		if len(targets) == 0 {
			t.Errorf("machine %s: profile %s has no configs: kiln render machine %s has nothing to show", name, mach.Spec.Profile, name)
		}
		for _, tg := range targets {
			args := []string{"render", "machine", name, "--kind", tg[0]}
			if tg[1] != "" {
				args = append(args, "--part", tg[1])
			}
			out, errOut, code := kilnAt(t, s, nil, "", args...)
			if code != 0 {
				t.Errorf("kiln %s: exit %d: %s", strings.Join(args, " "), code, errOut)
				continue
			}
			// Every example config names the machine (hostname, instance-id).
			if !strings.Contains(out, name) {
				t.Errorf("kiln %s does not name the machine:\n%s", strings.Join(args, " "), out)
			}
			for secret, v := range values {
				if strings.Contains(out, v) || strings.Contains(errOut, v) {
					t.Errorf("kiln %s printed secret %s's value", strings.Join(args, " "), secret)
				}
			}
		}
	}

	// The release rules as the configs show them: a web server's user-data carries a
	// handle for the TLS key, the CI runner's one for its token only.
	if _, errOut, _ := kilnAt(t, s, nil, "", "render", "machine", "web-1", "--kind", "cloud-init", "--part", "user-data"); !strings.Contains(errOut, "secret web-tls-key v1 via handle") {
		t.Errorf("render web-1 user-data: header %q lacks the web-tls-key handle", errOut)
	}
	if out, errOut, _ := kilnAt(t, s, nil, "", "render", "machine", "ci-runner-1", "--kind", "cloud-init", "--part", "user-data"); !strings.Contains(errOut, "secret ci-runner-token v1 via handle") || strings.Contains(out+errOut, "web-tls-key") {
		t.Errorf("render ci-runner-1 user-data: want the ci-runner-token handle and nothing of web-tls-key:\n%s%s", errOut, out)
	}
	// The preseed is public (no secret): served over plain HTTP.
	if out := s.MustKiln("", "render", "machine", "db-1", "--kind", "file", "--part", "preseed.cfg", "-o", "raw"); !strings.Contains(out, "d-i netcfg/get_hostname string db-1") {
		t.Errorf("db-1's preseed:\n%s", out)
	}
}

// Issue 19 item 3: a reprovision names every artifact the machine's boot or workflow
// needs that is not there: the agent's (no Artifact), the template's image (source
// missing from the artifact directory, sha256 unknown), a profile's kernel; and says
// nothing once they are all there.
func TestReprovisionWarnsMissingArtifacts(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln("", "apply", "-f", examplesDir)
	reprovision := func(machine string, args ...string) []string {
		t.Helper()
		out, stderr, code := kilnAt(t, s, nil, "", append([]string{"machine", "reprovision", machine, "--no-power"}, args...)...)
		if code != 0 || !strings.Contains(out, "machine/"+machine+" reprovisioning") {
			t.Fatalf("reprovision %s: exit %d\n%s%s", machine, code, out, stderr)
		}
		var warnings []string
		for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
			if line != "" {
				warnings = append(warnings, line)
			}
		}
		return warnings
	}
	artifacts := filepath.Join(s.DataDir, "artifacts")
	want := []string{
		`Warning: profile "debian-12-web" boots the agent, but artifact "kiln-agent-kernel" does not exist`,
		`Warning: profile "debian-12-web" boots the agent, but artifact "kiln-agent-initrd" does not exist`,
		`Warning: template "install-debian-12" action "stream-image" (args.image) names artifact "debian-12-image": source "install/disk.img.zst" is not in the artifact directory ` + artifacts,
		`Warning: template "install-debian-12" action "stream-image" (args.image) names artifact "debian-12-image", whose sha256 is neither declared (spec.sha256) nor recorded yet`,
	}
	got := reprovision("web-1")
	if len(got) != len(want) {
		t.Fatalf("reprovision web-1 warned %d times, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("warning %d: %q\nwant it to start with %q", i, got[i], w)
		}
	}

	// Everything there: the agent's artifacts as kiln image build --apply makes them
	// (files in the artifact directory, sha256 pinned), the disk image with its sha256
	// pinned as examples/README.md says.
	write := func(rel, content string) string {
		t.Helper()
		p := filepath.Join(artifacts, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(content))
		return hex.EncodeToString(sum[:])
	}
	kernelSum, initrdSum := write("agent/vmlinuz", "kernel"), write("agent/initramfs.cpio.gz", "initrd")
	imageSum := write("install/disk.img.zst", "image")
	examples, err := os.ReadFile(filepath.Join(examplesDir, "artifacts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pinned := strings.Replace(string(examples), "\n  source: install/disk.img.zst\n", "\n  source: install/disk.img.zst\n  sha256: "+imageSum+"\n", 1)
	if pinned == string(examples) {
		t.Fatal("examples/artifacts.yaml no longer has debian-12-image's source where examples/README.md's sed pins its sha256")
	}
	s.MustKiln(pinned+"\n---\nkind: Artifact\nmetadata: {name: kiln-agent-kernel}\nspec: {source: agent/vmlinuz, sha256: "+kernelSum+"}\n"+
		"---\nkind: Artifact\nmetadata: {name: kiln-agent-initrd}\nspec: {source: agent/initramfs.cpio.gz, sha256: "+initrdSum+"}\n", "apply", "-f", "-")
	if got := reprovision("web-1"); len(got) != 0 {
		t.Errorf("reprovision web-1 with every artifact there warned:\n%s", strings.Join(got, "\n"))
	}

	// A profile's own kernel whose file is missing is named too; a remote source (the
	// installer's initrd) is not checked: it is fetched when first needed.
	s.MustKiln("kind: Artifact\nmetadata: {name: rescue-kernel}\nspec: {source: rescue/vmlinuz}\n---\n"+
		"kind: Profile\nmetadata: {name: rescue}\nspec: {boot: {kernel: rescue-kernel, initrds: [debian-12-initrd]}, workflow: install-debian-12}\n---\n"+
		"kind: Machine\nmetadata: {name: rescue-1}\nspec: {profile: rescue, interfaces: [{mac: '52:54:00:12:34:99'}]}\n", "apply", "-f", "-")
	got = reprovision("rescue-1")
	if len(got) != 1 || !strings.HasPrefix(got[0], `Warning: profile "rescue" (spec.boot.kernel) names artifact "rescue-kernel": source "rescue/vmlinuz" is not in the artifact directory`) {
		t.Errorf("reprovision rescue-1 warned:\n%s\nwant one warning about rescue-kernel's missing file", strings.Join(got, "\n"))
	}
}
