package cli_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// Issue 19 item 5: a reprovision can be cancelled (the machine goes back, audited),
// a superseded workflow reads "superseded", a machine with workflows is deleted in one
// command with --cascade.
func TestCancelSupersedeCascade(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln("", "apply", "-f", "../../examples/")

	// Nothing to cancel yet.
	if _, stderr, code := kilnAt(t, s, nil, "", "machine", "cancel", "web-1"); code != 1 || !strings.Contains(stderr, "Error from server (Conflict)") || !strings.Contains(stderr, "no pending or running workflow") {
		t.Fatalf("cancel without a workflow: exit %d %q", code, stderr)
	}
	s.MustKiln("", "machine", "reprovision", "web-1", "--no-power")
	s.MustKiln("", "machine", "reprovision", "web-1", "--no-power") // supersedes the first
	wfs := s.MustKiln("", "get", "workflows", "--no-headers", "--sort-by", ".metadata.name")
	lines := strings.Split(strings.TrimSpace(wfs), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], " superseded ") || !strings.Contains(lines[1], " pending ") {
		t.Fatalf("workflows after two reprovisions:\n%s", wfs)
	}
	out := s.MustKiln("", "machine", "cancel", "web-1")
	if !strings.Contains(out, "cancelled; state new") {
		t.Fatalf("cancel: %q", out)
	}
	if st := s.MustKiln("", "get", "machine", "web-1", "--no-headers"); !strings.Contains(st, " new ") {
		t.Fatalf("machine after cancel:\n%s", st)
	}
	wfs = s.MustKiln("", "get", "workflows", "--no-headers", "--sort-by", ".metadata.name")
	if lines := strings.Split(strings.TrimSpace(wfs), "\n"); !strings.Contains(lines[1], " cancelled ") {
		t.Fatalf("workflows after cancel:\n%s", wfs)
	}
	if a := s.MustKiln("", "audit", "list", "--tail", "1"); !strings.Contains(a, "cancel") || !strings.Contains(a, "state provisioning -> new") {
		t.Fatalf("cancel not audited last:\n%s", a)
	}
	if _, stderr, code := kilnAt(t, s, nil, "", "machine", "cancel", "web-1"); code != 1 || !strings.Contains(stderr, "no pending or running workflow") {
		t.Fatalf("second cancel: exit %d %q", code, stderr)
	}

	// delete: refused while workflows refer to the machine, unless --cascade.
	if _, stderr, code := kilnAt(t, s, nil, "", "delete", "machine", "web-1"); code != 1 || !strings.Contains(stderr, "workflow") || !strings.Contains(stderr, "--cascade deletes its workflows too") {
		t.Fatalf("delete of a machine with workflows: exit %d %q", code, stderr)
	}
	if out := s.MustKiln("", "delete", "machine", "web-1", "--cascade"); out != "machine/web-1 deleted\n" {
		t.Fatalf("delete --cascade: %q", out)
	}
	if out := s.MustKiln("", "get", "workflows"); !strings.Contains(out, "No workflows found") {
		t.Fatalf("workflows left after --cascade:\n%s", out)
	}
}

// Issue 19 item 5: audit list shows the newest entries, newest last (--tail), and
// pages from a sequence number (--after), with a hint where the next page starts.
func TestAuditListTailAndPaging(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	var m strings.Builder
	for i := range 120 {
		fmt.Fprintf(&m, "kind: Machine\nmetadata: {name: a-%03d}\n---\n", i)
	}
	s.MustKiln(m.String(), "apply", "-f", "-")
	s.MustKiln("", "label", "machine", "a-000", "last=yes")
	seqs := func(args ...string) []int64 {
		var out struct {
			Items []struct{ Seq int64 }
			Head  int64
		}
		if err := json.Unmarshal([]byte(s.MustKiln("", append([]string{"audit", "list", "-o", "json"}, args...)...)), &out); err != nil {
			t.Fatal(err)
		}
		var s []int64
		for _, e := range out.Items {
			s = append(s, e.Seq)
		}
		return s
	}
	all := seqs("--after", "0", "--limit", "100000")
	if len(all) < 121 {
		t.Fatalf("%d entries", len(all))
	}
	head := all[len(all)-1]
	def := seqs()
	if len(def) != 100 || def[len(def)-1] != head || def[0] != head-99 {
		t.Fatalf("default audit list: %d entries %d..%d; want the newest 100 up to %d", len(def), def[0], def[len(def)-1], head)
	}
	if tail := seqs("--tail", "3"); len(tail) != 3 || tail[2] != head {
		t.Fatalf("--tail 3: %v (head %d)", tail, head)
	}
	if page := seqs("--after", "10", "--limit", "5"); len(page) != 5 || page[0] != 11 || page[4] != 15 {
		t.Fatalf("--after 10 --limit 5: %v", page)
	}
	if out := s.MustKiln("", "audit", "list", "--tail", "1"); !strings.Contains(out, "machine/a-000") || !strings.Contains(out, "last") {
		t.Fatalf("the newest entry is not last:\n%s", out)
	}
	_, stderr, _ := kilnAt(t, s, nil, "", "audit", "list", "--after", "0", "--limit", "5")
	if want := fmt.Sprintf("kiln audit list --after 5"); !strings.Contains(stderr, want) {
		t.Fatalf("paging hint: %q lacks %q", stderr, want)
	}
}

// Issue 19 item 3: every template of a profile is executed against a sample machine
// at apply; one naming a variable that does not exist is refused with its field path.
func TestProfileTemplatesCheckedAtApply(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln("", "apply", "-f", "../../examples/")
	if out := s.MustKiln("", "render", "machine", "db-1", "--kind", "file", "--part", "preseed.cfg", "-o", "raw"); !strings.Contains(out, "get_hostname string db-1") {
		t.Fatalf("render of the example preseed:\n%s", out)
	}
	for _, tc := range []struct{ spec, want string }{
		{`{boot: {kernel: debian-12-kernel, cmdline: "url={{ .ConfigURL }}"}}`, `profile "p": spec.boot.cmdline: template: p:1:7: executing "p" at <.ConfigURL>: can't evaluate field ConfigURL`},
		{`{boot: {agent: true}, configs: {files: {a.cfg: "{{ .Machine.Nme }}"}}}`, `spec.configs.files.a.cfg`},
		{`{boot: {agent: true}, configs: {cloudInit: {user-data: "{{ nosuchfunc }}"}}}`, `spec.configs.cloudInit.user-data`},
	} {
		_, stderr, code := kilnAt(t, s, nil, "kind: Profile\nmetadata: {name: p}\nspec: "+tc.spec+"\n", "apply", "-f", "-")
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("apply of %s: exit %d %q; want %q", tc.spec, code, stderr, tc.want)
		}
	}
	// A label the sample machine lacks is not an error: real machines may have it.
	s.MustKiln("kind: Profile\nmetadata: {name: p}\nspec: {boot: {kernel: debian-12-kernel, cmdline: \"rack={{ .Machine.Labels.rack }}\"}}\n", "apply", "-f", "-")
}

// Issue 19 item 3: a profile that boots the agent while the agent's artifacts do not
// exist applies, with a warning, and a reprovision onto it warns too.
func TestMissingAgentArtifactsWarned(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	want := `Warning: profile "debian-12-web" boots the agent, but artifact "kiln-agent-kernel" does not exist`
	_, stderr, code := kilnAt(t, s, nil, "", "apply", "-f", "../../examples/")
	if code != 0 || !strings.Contains(stderr, want) || !strings.Contains(stderr, `artifact "kiln-agent-initrd"`) {
		t.Fatalf("apply of the examples without agent artifacts: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = kilnAt(t, s, nil, "", "machine", "reprovision", "web-1", "--no-power")
	if code != 0 || !strings.Contains(stderr, want) {
		t.Fatalf("reprovision onto a profile without agent artifacts: exit %d, stderr %q", code, stderr)
	}
	// With agent artifacts that exist, no warning.
	s2 := startServer(t, t.TempDir(), nil, "--agent-kernel", "debian-12-kernel", "--agent-initrd", "debian-12-initrd")
	if _, stderr, code := kilnAt(t, s2, nil, "", "apply", "-f", "../../examples/"); code != 0 || strings.Contains(stderr, "Warning") {
		t.Fatalf("apply with the agent's artifacts present: exit %d, stderr %q", code, stderr)
	}
}
