package cli_test

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The README's tables are checked against the binary so that they cannot drift
// (issue 19 item 7): the flags of `kiln serve` and their variables, the kinds and
// their aliases, and the CLI commands.

// readmeTable returns the rows (cells trimmed) of the first table after the line
// starting with heading whose header row starts with header.
func readmeTable(t *testing.T, readme, heading, header string) [][]string {
	t.Helper()
	i := strings.Index(readme, "\n"+heading)
	if i < 0 {
		t.Fatalf("README has no %q", heading)
	}
	lines := strings.Split(readme[i+1:], "\n")
	var rows [][]string
	in := false
	for _, l := range lines {
		switch {
		case !in && strings.HasPrefix(l, header):
			in = true
		case in && strings.HasPrefix(l, "|---"):
		case in && strings.HasPrefix(l, "|"):
			// Split on | but not on \| (an escaped bar inside a cell).
			cells := regexp.MustCompile(`[^\\]\|`).Split(" "+strings.TrimSuffix(l, "|"), -1)
			var row []string
			for _, c := range cells[1:] {
				row = append(row, strings.TrimSpace(strings.ReplaceAll(c, `\|`, "|")))
			}
			rows = append(rows, row)
		case in:
			return rows
		}
	}
	return rows
}

var codeSpan = regexp.MustCompile("`([^`]*)`")

func codeSpans(s string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

func readREADME(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestREADMEServeFlagsMatchBinary(t *testing.T) {
	readme := readREADME(t)
	help, _, code := runKiln(t, nil, "serve", "--help")
	if code != 0 {
		t.Fatalf("kiln serve --help: exit %d", code)
	}
	// The binary's flags and the variable each names in its usage.
	flagLine := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)[ =\[].*$`)
	local := help[strings.Index(help, "\nFlags:"):strings.Index(help, "\nGlobal Flags:")]
	binFlags := map[string]string{} // flag -> its line
	for _, m := range flagLine.FindAllStringSubmatch(local, -1) {
		if m[1] != "help" {
			binFlags[m[1]] = m[0]
		}
	}
	binFlags["data-dir"] = "(env KILN_DATA_DIR)" // a global flag that serve uses
	if len(binFlags) < 30 {
		t.Fatalf("parsed only %d flags from kiln serve --help:\n%s", len(binFlags), help)
	}
	documented := map[string]bool{}
	for _, row := range readmeTable(t, readme, "## Configuration reference", "| flag | env |") {
		flags, envs := codeSpans(row[0]), codeSpans(row[1])
		if len(envs) != len(flags) {
			t.Errorf("README flags row %q: %d flags but env column %q", row[0], len(flags), row[1])
			continue
		}
		for i, f := range flags {
			name := strings.TrimPrefix(f, "--")
			documented[name] = true
			line, ok := binFlags[name]
			if !ok {
				t.Errorf("README documents %s, which kiln serve does not have", f)
				continue
			}
			want := "KILN_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
			if envs[i] != want {
				t.Errorf("README: %s reads %s, not %s", f, want, envs[i])
			}
			if !strings.Contains(line, "env "+want) {
				t.Errorf("kiln serve --help does not name %s for %s: %s", want, f, line)
			}
		}
	}
	for _, f := range slices.Sorted(maps.Keys(binFlags)) {
		if !documented[f] {
			t.Errorf("kiln serve --%s is not in the README's configuration reference", f)
		}
	}
}

func TestREADMEKindsMatchBinary(t *testing.T) {
	readme := readREADME(t)
	// `kiln get` without a kind lists NAME ALIASES KIND WRITABLE.
	_, table, _ := runKiln(t, nil, "get")
	type kindRow struct{ plural, aliases string }
	bin := map[string]kindRow{}
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) == 4 && (f[3] == "true" || f[3] == "false") {
			bin[f[2]] = kindRow{f[0], f[1]}
		}
	}
	if len(bin) < 10 {
		t.Fatalf("kiln get listed %d kinds:\n%s", len(bin), table)
	}
	spec := map[string]bool{}
	for _, row := range readmeTable(t, readme, "A MAC belongs to one machine", "| kind | spec |") {
		k := strings.Trim(row[0], "`")
		spec[k] = true
		if _, ok := bin[k]; !ok {
			t.Errorf("README's kinds table has %s, which kiln does not know", k)
		}
	}
	aliases := map[string]bool{}
	for _, row := range readmeTable(t, readme, "Kinds can be named by kind", "| kind | plural | aliases |") {
		k := strings.Trim(row[0], "`")
		aliases[k] = true
		b, ok := bin[k]
		if !ok {
			t.Errorf("README's aliases table has %s, which kiln does not know", k)
			continue
		}
		if p := strings.Trim(row[1], "`"); p != b.plural {
			t.Errorf("README: %s's plural is %s, kiln says %s", k, p, b.plural)
		}
		if a := strings.Join(codeSpans(row[2]), ","); a != b.aliases {
			t.Errorf("README: %s's aliases are %s, kiln says %s", k, a, b.aliases)
		}
	}
	for k := range bin {
		if !spec[k] {
			t.Errorf("kind %s is not in the README's kinds table", k)
		}
		if !aliases[k] {
			t.Errorf("kind %s is not in the README's aliases table", k)
		}
	}
	// Every alias works in a command (parsed before any request is made).
	for k, b := range bin {
		for _, a := range slices.Concat([]string{b.plural}, strings.Split(b.aliases, ",")) {
			if _, stderr, _ := runKiln(t, nil, "get", a, "-o", "bogus"); strings.Contains(stderr, "unknown kind") {
				t.Errorf("alias %s of %s refused: %s", a, k, stderr)
			}
		}
	}
}

func TestREADMECommandsMatchBinary(t *testing.T) {
	readme := readREADME(t)
	// Cobra's own tree: the visible commands under a path, from __complete.
	subcommands := func(path ...string) map[string]bool {
		out, _, _ := runKiln(t, nil, append(append([]string{"__complete"}, path...), "")...)
		cmds := map[string]bool{}
		for _, l := range strings.Split(out, "\n") {
			if name, _, ok := strings.Cut(l, "\t"); ok {
				cmds[name] = true
			}
		}
		return cmds
	}
	top := subcommands()
	delete(top, "help")
	if len(top) < 15 {
		t.Fatalf("__complete listed %d commands", len(top))
	}
	inTable := map[string]bool{}
	word := regexp.MustCompile(`^[a-z][a-z-]*$`)
	for _, row := range readmeTable(t, readme, "## CLI reference", "| command |") {
		for _, span := range codeSpans(row[0]) {
			f := strings.Fields(span)
			if len(f) < 2 || f[0] != "kiln" {
				continue
			}
			cmd := f[1]
			if !top[cmd] {
				t.Errorf("README's CLI table has `kiln %s`, which the binary does not have", cmd)
				continue
			}
			inTable[cmd] = true
			// A group's subcommands named in the row must exist: `kiln audit list`,
			// `kiln secret set|get|list`.
			if len(f) < 3 {
				continue
			}
			subs := subcommands(cmd)
			if len(subs) == 0 {
				continue // not a group: f[2] is an argument
			}
			for _, s := range strings.Split(f[2], "|") {
				if word.MatchString(s) && !subs[s] {
					t.Errorf("README's CLI table has `kiln %s %s`, which the binary does not have", cmd, s)
				}
			}
		}
	}
	for _, c := range slices.Sorted(maps.Keys(top)) {
		if !inTable[c] {
			t.Errorf("kiln %s is not in the README's CLI table", c)
		}
	}
}
