package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
)

// kilnAt runs the binary against s as an operator would, returning stdout, stderr
// and the exit code (runKiln with the server's data dir).
func kilnAt(t *testing.T, s *testkit.Server, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return runKilnIn(t, env, stdin, append([]string{"--data-dir", s.DataDir}, args...)...)
}

// Issue 19 item 4: TYPE/NAME, several names and kinds, delete -l, label, the get
// table flags, and -o json of a list that re-applies.
func TestKubectlIdioms(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln("", "apply", "-f", "../../examples/")
	tmp := "kind: Machine\nmetadata: {name: t-1, labels: {tmp: a}}\n---\nkind: Machine\nmetadata: {name: t-2, labels: {tmp: a}}\n---\n" +
		"kind: Machine\nmetadata: {name: t-3, labels: {tmp: b}}\n---\nkind: Machine\nmetadata: {name: t-4, labels: {tmp: b}}\n"
	s.MustKiln(tmp, "apply", "-f", "-")

	// get -o name | xargs kiln delete
	names := strings.Fields(s.MustKiln("", "get", "machines", "-l", "tmp=a", "-o", "name"))
	if strings.Join(names, " ") != "machine/t-1 machine/t-2" {
		t.Fatalf("get -o name: %q", names)
	}
	if out := s.MustKiln("", append([]string{"delete"}, names...)...); out != "machine/t-1 deleted\nmachine/t-2 deleted\n" {
		t.Fatalf("delete TYPE/NAME...: %q", out)
	}
	// delete -l
	if out := s.MustKiln("", "delete", "machines", "-l", "tmp=b"); out != "machine/t-3 deleted\nmachine/t-4 deleted\n" {
		t.Fatalf("delete -l: %q", out)
	}
	if out := s.MustKiln("", "get", "machines", "-l", "tmp", "-o", "name"); out != "" {
		t.Fatalf("left after the deletes: %q", out)
	}
	// Several names, several kinds, TYPE/NAME for get and describe.
	if out := s.MustKiln("", "get", "machine", "web-1", "web-2", "-o", "name"); out != "machine/web-1\nmachine/web-2\n" {
		t.Fatalf("get machine web-1 web-2: %q", out)
	}
	if out := s.MustKiln("", "get", "machine/db-1", "profile/debian-12-web", "-o", "name"); out != "machine/db-1\nprofile/debian-12-web\n" {
		t.Fatalf("get TYPE/NAME...: %q", out)
	}
	both := s.MustKiln("", "get", "machines,profiles", "-o", "name")
	if !strings.Contains(both, "machine/web-1\n") || !strings.Contains(both, "profile/debian-12-web\n") {
		t.Fatalf("get machines,profiles:\n%s", both)
	}
	tables := s.MustKiln("", "get", "machines,profiles,leases")
	if parts := strings.Split(tables, "\n\n"); len(parts) != 2 || !strings.HasPrefix(parts[0], "NAME") || !strings.HasPrefix(parts[1], "NAME") || strings.Contains(tables, "No leases") {
		t.Fatalf("get machines,profiles,leases: want a table per non-empty kind, a blank line apart:\n%s", tables)
	}
	if out := s.MustKiln("", "describe", "machine/web-1"); !strings.Contains(out, "Name:              web-1") {
		t.Fatalf("describe TYPE/NAME:\n%s", out)
	}

	// Table flags.
	wide := s.MustKiln("", "get", "machines", "-o", "wide", "--show-labels", "--sort-by", ".metadata.name")
	lines := strings.Split(strings.TrimSpace(wide), "\n")
	for _, h := range []string{"NAME", "STATE", "HOSTNAME", "BMC", "LABELS"} {
		if !strings.Contains(lines[0], h) {
			t.Errorf("get -o wide --show-labels header lacks %s: %q", h, lines[0])
		}
	}
	if len(lines) != 5 || !strings.HasPrefix(lines[1], "ci-runner-1 ") || !strings.HasPrefix(lines[2], "db-1 ") || !strings.HasPrefix(lines[4], "web-2 ") || !strings.Contains(lines[3], "rack=r1,role=web,site=ams1") {
		t.Errorf("get -o wide sorted by name:\n%s", wide)
	}
	noHead := s.MustKiln("", "get", "machines", "--no-headers", "--sort-by", "{.spec.interfaces.0.ip}")
	if strings.Contains(noHead, "NAME") || !strings.HasPrefix(noHead, "web-1 ") {
		t.Errorf("get --no-headers --sort-by ip:\n%s", noHead)
	}
	if _, stderr, code := kilnAt(t, s, nil, "", "get", "machines", "--sort-by", ".items[*]"); code != 1 || !strings.Contains(stderr, "--sort-by") {
		t.Errorf("--sort-by with a filter: exit %d %q", code, stderr)
	}

	// label: kubectl's --overwrite rule, KEY- removes.
	if _, stderr, code := kilnAt(t, s, nil, "", "label", "machine", "web-1", "rack=r9"); code != 1 || !strings.Contains(stderr, `label "rack" already has a value (r1), and --overwrite is false`) {
		t.Errorf("label without --overwrite: exit %d %q", code, stderr)
	}
	if out := s.MustKiln("", "label", "machine/web-1", "machine/web-2", "rack=r9", "tier=front", "--overwrite"); out != "machine/web-1 labeled\nmachine/web-2 labeled\n" {
		t.Errorf("label --overwrite: %q", out)
	}
	if out := s.MustKiln("", "label", "machine", "web-1", "tier-"); out != "machine/web-1 labeled\n" {
		t.Errorf("label KEY-: %q", out)
	}
	if out := s.MustKiln("", "get", "machines", "-l", "rack=r9,tier=front", "-o", "name"); out != "machine/web-2\n" {
		t.Errorf("labels after label: %q", out)
	}

	// -o json of a list re-applies, unchanged.
	js := s.MustKiln("", "get", "machines,profiles", "-o", "json")
	if !strings.Contains(js, `"kind": "List"`) {
		t.Fatalf("-o json of a list:\n%s", js)
	}
	out := s.MustKiln(js, "apply", "-f", "-")
	if !strings.Contains(out, "machine/web-1 unchanged") || strings.Contains(out, "configured") || strings.Contains(out, "created") {
		t.Errorf("re-apply of -o json:\n%s", out)
	}
	if out := s.MustKiln(`{"items": []}`, "get", "machines", "-o", "name"); out == "" {
		t.Error("no machines")
	}
}

// Issue 19 item 4: kiln edit with a fake $EDITOR: a change is applied with the
// resourceVersion, no change is "Edit cancelled", a change made meanwhile is refused.
func TestEditWithFakeEditor(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln("", "apply", "-f", "../../examples/")
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\nset -e\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sed := script("sed-editor", `grep -q "resourceVersion:" "$1"; sed -i 's/rack: r1/rack: r5/' "$1"`)
	out, stderr, code := kilnAt(t, s, []string{"EDITOR=" + sed}, "", "edit", "machine", "web-1")
	if code != 0 || out != "machine/web-1 edited\n" {
		t.Fatalf("edit: exit %d, %q %q", code, out, stderr)
	}
	if got := s.MustKiln("", "get", "machines", "-l", "rack=r5", "-o", "name"); got != "machine/web-1\n" {
		t.Fatalf("after edit: %q", got)
	}
	out, _, code = kilnAt(t, s, []string{"EDITOR=true"}, "", "edit", "machine/web-1")
	if code != 0 || out != "Edit cancelled, no changes made.\n" {
		t.Fatalf("edit without a change: exit %d %q", code, out)
	}
	// Someone else labels the machine while the editor is open: the edit is refused.
	racing := script("racing-editor", `"$KILN_BIN" --data-dir "$KILN_TEST_DATA" label machine web-1 other=change >/dev/null; sed -i 's/rack: r5/rack: r6/' "$1"`)
	_, stderr, code = kilnAt(t, s, []string{"EDITOR=" + racing, "KILN_BIN=" + testkit.KilnBinary(t), "KILN_TEST_DATA=" + s.DataDir}, "", "edit", "machine", "web-1")
	if code != 1 || !strings.Contains(stderr, "Error from server (Conflict)") {
		t.Fatalf("edit racing another change: exit %d %q", code, stderr)
	}
	if got := s.MustKiln("", "get", "machines", "-l", "rack=r6", "-o", "name"); got != "" {
		t.Fatalf("a refused edit was written: %q", got)
	}
}

// Issue 19 item 4: apply --dry-run checks on the server and writes nothing; kiln
// diff prints a unified diff and exits 1 on differences, as kubectl diff.
func TestDryRunAndDiff(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln("", "apply", "-f", "../../examples/")
	before := auditCount(t, s)

	if out := s.MustKiln("", "diff", "-f", "../../examples/"); out != "" {
		t.Fatalf("diff of the applied examples: %q", out)
	}
	changed := "apiVersion: kiln.dev/v1\nkind: Machine\nmetadata:\n  name: web-1\n  labels: {role: web, rack: r7, site: ams1}\n" +
		"spec:\n  profile: debian-12-web\n  interfaces: [{name: eno1, mac: '52:54:00:12:34:01', ip: 10.20.0.11, hostname: web-1}]\n" +
		"  bmc: {driver: redfish, address: 'https://10.20.1.11', credentialsSecret: bmc-rack1}\n---\n" +
		"apiVersion: kiln.dev/v1\nkind: Machine\nmetadata: {name: new-1}\n"
	out, stderr, code := kilnAt(t, s, nil, changed, "diff", "-f", "-")
	if code != 1 || stderr != "" || !strings.Contains(out, "-    rack: r1\n") || !strings.Contains(out, "+    rack: r7\n") || !strings.Contains(out, "+  name: new-1\n") {
		t.Fatalf("diff of a change: exit %d, stderr %q:\n%s", code, stderr, out)
	}

	out = s.MustKiln(changed, "apply", "--dry-run", "-f", "-")
	if !strings.Contains(out, "machine/web-1 configured (server dry run): ") || !strings.Contains(out, "rack") || !strings.Contains(out, "machine/new-1 created (server dry run)") {
		t.Fatalf("apply --dry-run:\n%s", out)
	}
	if got := s.MustKiln("", "get", "machines", "-l", "rack=r7", "-o", "name"); got != "" {
		t.Fatalf("a dry run wrote: %q", got)
	}
	if _, err := s.Kiln("", "get", "machine", "new-1"); err == nil {
		t.Fatal("a dry run created new-1")
	}
	if after := auditCount(t, s); after != before {
		t.Fatalf("a dry run audited: %d -> %d entries", before, after)
	}
	// Server-side validation: a reference to a missing profile is refused in a dry run too.
	_, stderr, code = kilnAt(t, s, nil, "kind: Machine\nmetadata: {name: x-1}\nspec: {profile: nosuch}\n", "apply", "--dry-run", "-f", "-")
	if code != 1 || !strings.Contains(stderr, "nosuch") {
		t.Fatalf("dry run of a bad reference: exit %d %q", code, stderr)
	}
}

// Issue 19 item 4: completion of kinds, names from the server, -o values and power
// operations; kiln version shows the server's version too.
func TestCompletionAndVersion(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln("", "apply", "-f", "../../examples/")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"get", ""}, []string{"machines", "profile", "powerjobs"}},
		{[]string{"get", "machines", ""}, []string{"web-1", "web-2", "db-1"}},
		{[]string{"get", "machines", "web-1", ""}, []string{"web-2", "db-1"}},
		{[]string{"describe", "machine/w"}, []string{"machine/web-1", "machine/web-2"}},
		{[]string{"get", "machines", "-o", ""}, []string{"table", "wide", "yaml", "json", "name"}},
		{[]string{"machine", "power", ""}, []string{"on", "off", "cycle", "soft-off", "status", "set-boot"}},
		{[]string{"machine", "power", "cycle", "d"}, []string{"db-1"}},
		{[]string{"delete", "profiles", ""}, []string{"debian-12-web"}},
	} {
		out := s.MustKiln("", append([]string{"__complete"}, tc.args...)...)
		got := strings.Split(strings.TrimSpace(out), "\n")
		for _, w := range tc.want {
			if !containsLine(got, w) {
				t.Errorf("__complete %q lacks %q:\n%s", tc.args, w, out)
			}
		}
		if len(tc.args) == 4 && containsLine(got, "web-1") {
			t.Errorf("__complete %q offers a name already given:\n%s", tc.args, out)
		}
	}
	out := s.MustKiln("", "version")
	if !strings.HasPrefix(out, "kiln ") || !strings.Contains(out, "\nserver: dev (go ") {
		t.Errorf("kiln version:\n%s", out)
	}
	out, _, code := runKiln(t, nil, "--server", "http://127.0.0.1:1", "version")
	if code != 0 || !strings.Contains(out, "server: unknown (") {
		t.Errorf("kiln version without a server: exit %d\n%s", code, out)
	}
}

func containsLine(lines []string, s string) bool {
	for _, l := range lines {
		if l == s || strings.HasPrefix(l, s+"\t") {
			return true
		}
	}
	return false
}
