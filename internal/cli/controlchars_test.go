package cli_test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDisplayEscapesControlCharacters stores what an anonymous host could once put
// into a machine's timeline (a buildarch with a newline that fakes a
// WorkflowSucceeded line, an ANSI clear-screen) straight into the database, as data
// written before input validation existed would be, and checks that `kiln describe
// machine`, `kiln logs` and `kiln audit list` print it escaped, on one line.
func TestDisplayEscapesControlCharacters(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, nil)
	s.MustKiln("", "apply", "-f", "../../examples/")
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "kiln.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const payload = "x86_64\n1999-01-01 10:00:00.000   +1s   WorkflowSucceeded   all done\x1b[2J\u009b31m"
	now := time.Now().UnixNano()
	for _, typ := range []string{"BootScript", "AgentLog"} {
		if _, err := db.Exec("INSERT INTO events (machine, time, type, message) VALUES ('web-1', ?, ?, ?)", now, typ, "served install script (buildarch "+payload+")"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec("UPDATE audit SET summary = ? WHERE seq = (SELECT max(seq) FROM audit)", "created "+payload); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"describe", "machine", "web-1"},
		{"logs", "machine", "web-1"},
		{"audit", "list"},
	} {
		out := s.MustKiln("", args...)
		if strings.ContainsAny(out, "\x1b\u009b") {
			t.Errorf("kiln %s printed a raw escape sequence:\n%q", strings.Join(args, " "), out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "1999-01-01") {
				t.Errorf("kiln %s printed a forged line: %q", strings.Join(args, " "), line)
			}
		}
		if !strings.Contains(out, `x86_64\n1999-01-01`) || !strings.Contains(out, `\x1b[2J`) {
			t.Errorf("kiln %s does not show the control characters escaped:\n%s", strings.Join(args, " "), out)
		}
	}
}
