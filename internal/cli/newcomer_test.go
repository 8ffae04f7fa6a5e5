package cli_test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// runKiln runs the binary without a server behind it (commands that fail before any
// request), with env added to a clean environment. It returns stdout, stderr and the
// exit code.
func runKiln(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testkit.KilnBinary(t), args...)
	cmd.Env = append(testkit.CleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("kiln %s: %v", strings.Join(args, " "), err)
	return "", "", -1
}

// Issue 19 item 1: a typo under a group command fails (a cron job running
// `kiln audit verfy` must alert), with a suggestion, like a typo at the top level.
func TestUnknownSubcommandFails(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    string
		suggest string
	}{
		{[]string{"audit", "verfy"}, `unknown command "verfy" for "kiln audit"`, "verify"},
		{[]string{"machine", "reprovison", "web-1"}, `unknown command "reprovison" for "kiln machine"`, "reprovision"},
		{[]string{"secret", "lst"}, `unknown command "lst" for "kiln secret"`, "list"},
		{[]string{"api-token", "revok", "x"}, `unknown command "revok" for "kiln api-token"`, "revoke"},
		{[]string{"join-token", "craete"}, `unknown command "craete" for "kiln join-token"`, "create"},
		{[]string{"ca", "shwo"}, `unknown command "shwo" for "kiln ca"`, "show"},
		{[]string{"agent", "enrol"}, `unknown command "enrol" for "kiln agent"`, "enroll"},
		{[]string{"image", "biuld"}, `unknown command "biuld" for "kiln image"`, "build"},
		{[]string{"enrollment", "aprove"}, `unknown command "aprove" for "kiln enrollment"`, "approve"},
		{[]string{"getx"}, `unknown command "getx" for "kiln"`, "get"},
	} {
		_, stderr, code := runKiln(t, nil, tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "Did you mean this?\n") || !strings.Contains(stderr, "\t"+tc.suggest+"\n") {
			t.Errorf("kiln %s: exit %d, stderr %q; want exit 1, %q and the suggestion %q", strings.Join(tc.args, " "), code, stderr, tc.want, tc.suggest)
		}
	}
	// The group alone still shows its help, as kubectl's do.
	if out, _, code := runKiln(t, nil, "audit"); code != 0 || !strings.Contains(out, "verify") {
		t.Errorf("kiln audit: exit %d:\n%s", code, out)
	}
}

// Issue 19 item 1: every -o refuses an unknown format before any request (the
// server URL here answers nothing) and names the formats it takes.
func TestUnknownOutputFormatRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "machines"}, "one of: table, yaml, json, name"},
		{[]string{"audit", "list"}, "one of: table, json"},
		{[]string{"secret", "audit", "s"}, "one of: table, json"},
		{[]string{"secret", "list"}, "one of: table, yaml, json, name"},
		{[]string{"secret", "get", "s"}, "one of: table, json"},
		{[]string{"join-token", "list"}, "one of: table, json"},
		{[]string{"join-token", "create", "--profile", "p"}, "one of: token, json"},
		{[]string{"render", "machine", "m"}, "one of: text, raw, json"},
	} {
		args := append(tc.args, "-o", "bogus", "--server", "http://127.0.0.1:1")
		out, stderr, code := runKiln(t, nil, args...)
		if code != 1 || !strings.Contains(stderr, "unknown output format bogus; "+tc.want) || out != "" {
			t.Errorf("kiln %s: exit %d, stdout %q, stderr %q; want exit 1 and %q", strings.Join(args, " "), code, out, stderr, tc.want)
		}
	}
}
