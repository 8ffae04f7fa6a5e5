package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 18 item 6: named contexts in the client config, and the precedence of each
// setting: flag > KILN_* variable > context > defaults.
func TestClientContexts(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	home := t.TempDir()
	cfgDir := filepath.Join(home, "xdg")
	// An empty data dir: no server.url, no admin token, so only the context can
	// name the server. dead is a URL where nothing listens.
	empty := t.TempDir()
	const dead = "http://127.0.0.1:1"
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + cfgDir}
	kiln := func(extraEnv []string, stdin string, args ...string) (string, string, int) {
		t.Helper()
		return runKilnIn(t, append(append([]string{}, env...), extraEnv...), stdin, append([]string{"--data-dir", empty}, args...)...)
	}
	mustKiln := func(stdin string, args ...string) string {
		t.Helper()
		out, stderr, code := kiln(nil, stdin, args...)
		if code != 0 {
			t.Fatalf("kiln %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		return out
	}
	tokenFile := filepath.Join(home, "lab.token")
	if err := os.WriteFile(tokenFile, []byte(s.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	if out := mustKiln("", "config", "set-context", "lab", "--server", s.URL, "--token-file", tokenFile); out != "Context \"lab\" created.\n" {
		t.Fatalf("set-context: %q", out)
	}
	mustKiln("", "config", "set-context", "gone", "--server", dead)
	// The default file, under XDG_CONFIG_HOME, mode 0600.
	st, err := os.Stat(filepath.Join(cfgDir, "kiln", "config.yaml"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, mode %v, want 0600 under XDG_CONFIG_HOME", err, st)
	}
	if _, stderr, code := kiln(nil, "", "config", "current-context"); code == 0 || !strings.Contains(stderr, "current-context: not set") {
		t.Errorf("current-context before use-context: exit %d %q", code, stderr)
	}
	// No current context: the default server, which is not there.
	if _, stderr, code := kiln([]string{"KILN_SERVER=" + dead}, "", "get", "profiles"); code == 0 || !strings.Contains(stderr, "cannot reach kiln at "+dead) {
		t.Fatalf("without a context: exit %d %q", code, stderr)
	}
	if out := mustKiln("", "config", "use-context", "lab"); out != "Switched to context \"lab\".\n" {
		t.Fatalf("use-context: %q", out)
	}
	if out := mustKiln("", "config", "current-context"); out != "lab\n" {
		t.Fatalf("current-context: %q", out)
	}
	if out := mustKiln("", "config", "get-contexts"); !strings.Contains(out, "*         lab    "+s.URL) || !strings.Contains(out, "gone") || strings.Contains(out, s.AdminToken) {
		t.Fatalf("get-contexts:\n%s", out)
	}

	// The context supplies server and token.
	mustKiln("", "get", "profiles")
	// A variable beats the context, a flag beats the variable.
	if _, stderr, code := kiln([]string{"KILN_SERVER=" + dead}, "", "get", "profiles"); code == 0 || !strings.Contains(stderr, "cannot reach kiln at "+dead) {
		t.Errorf("KILN_SERVER over the context: exit %d %q", code, stderr)
	}
	if _, stderr, code := kiln([]string{"KILN_SERVER=" + dead}, "", "--server", s.URL, "--token", "x", "get", "profiles"); code == 0 || !strings.Contains(stderr, "Unauthorized") {
		t.Errorf("--server over KILN_SERVER (with a wrong --token over the context's): exit %d %q", code, stderr)
	}
	// --context and KILN_CONTEXT pick another context; the flag beats the variable.
	if _, stderr, code := kiln(nil, "", "--context", "gone", "get", "profiles"); code == 0 || !strings.Contains(stderr, "cannot reach kiln at "+dead) {
		t.Errorf("--context gone: exit %d %q", code, stderr)
	}
	if _, stderr, code := kiln([]string{"KILN_CONTEXT=gone"}, "", "get", "profiles"); code == 0 || !strings.Contains(stderr, dead) {
		t.Errorf("KILN_CONTEXT=gone: exit %d %q", code, stderr)
	}
	if _, stderr, code := kiln([]string{"KILN_CONTEXT=gone"}, "", "--context", "lab", "get", "profiles"); code != 0 {
		t.Errorf("--context lab over KILN_CONTEXT=gone: exit %d %q", code, stderr)
	}
	if _, stderr, code := kiln(nil, "", "--context", "nope", "get", "profiles"); code == 0 || !strings.Contains(stderr, `--context: "nope" is not a context`) {
		t.Errorf("--context nope: exit %d %q", code, stderr)
	}
	// The context's token goes only to the context's server: with --server naming
	// the same server by another address, no token is sent.
	other := strings.Replace(s.URL, "127.0.0.1", "localhost", 1)
	if _, stderr, code := kiln(nil, "", "--server", other, "get", "profiles"); code == 0 || !strings.Contains(stderr, "Unauthorized") || !strings.Contains(stderr, "no API token") {
		t.Errorf("--server with the context's token: exit %d %q, want 401 without a token", code, stderr)
	}
	// An explicit --data-dir names its own server, over the context.
	gone := mustKilnDataDir(t, env, s.DataDir, "--context", "gone", "get", "profiles")
	if gone != nil {
		t.Errorf("--data-dir over the context: %v", gone)
	}

	// A relative token-file is relative to the config file's directory.
	if err := os.WriteFile(filepath.Join(cfgDir, "kiln", "rel.token"), []byte(s.AdminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	mustKiln("", "config", "set-context", "rel", "--server", s.URL, "--token-file", "rel.token")
	mustKiln("", "--context", "rel", "get", "profiles")

	// A token from standard input is stored, and view redacts it.
	mustKiln("secret-token-value\n", "config", "set-context", "stdin", "--server", s.URL, "--token-stdin")
	view := mustKiln("", "config", "view")
	if strings.Contains(view, "secret-token-value") || !strings.Contains(view, "token: REDACTED") || !strings.Contains(view, "token-file: "+tokenFile) || !strings.Contains(view, "current-context: lab") {
		t.Errorf("view:\n%s", view)
	}
	b, _ := os.ReadFile(filepath.Join(cfgDir, "kiln", "config.yaml"))
	if !strings.Contains(string(b), "secret-token-value") {
		t.Errorf("--token-stdin did not store the token:\n%s", b)
	}
	// set-context changes only what it is given; KILN_SERVER is not its --server.
	if _, stderr, code := kiln([]string{"KILN_SERVER=" + dead}, "", "config", "set-context", "lab", "--ca-fingerprint", strings.Repeat("ab", 32)); code != 0 {
		t.Fatalf("set-context lab --ca-fingerprint: %d %s", code, stderr)
	}
	if view := mustKiln("", "config", "view"); !strings.Contains(view, "- name: lab\n    server: "+s.URL+"\n") || !strings.Contains(view, "ca-fingerprint: "+strings.Repeat("ab", 32)) {
		t.Errorf("after set-context lab --ca-fingerprint:\n%s", view)
	}

	// Bad input: an error naming the field, the file unchanged.
	before, _ := os.ReadFile(filepath.Join(cfgDir, "kiln", "config.yaml"))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"config", "set-context", "lab", "--server", "ftp://x"}, `server: "ftp://x" is not an http:// or https:// URL`},
		{[]string{"config", "set-context", "lab", "--ca-fingerprint", "zz"}, "ca-fingerprint:"},
		{[]string{"config", "set-context", "lab", "--auth", "saml"}, `auth: "saml" is not one of token, oidc`},
		{[]string{"config", "use-context", "nope"}, `use-context: "nope" is not a context`},
		{[]string{"config", "set-context", "a b", "--server", s.URL}, `name: "a b" is not a context name`},
	} {
		if _, stderr, code := kiln(nil, "", c.args...); code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("kiln %s: exit %d %q, want %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(cfgDir, "kiln", "config.yaml")); string(after) != string(before) {
		t.Errorf("a refused set-context changed the file:\n%s", after)
	}
	// auth: oidc is reserved: a clear error, nothing sent.
	mustKiln("", "config", "set-context", "sso", "--server", s.URL, "--auth", "oidc")
	if _, stderr, code := kiln(nil, "", "--context", "sso", "get", "profiles"); code == 0 || !strings.Contains(stderr, `context "sso": auth: oidc is not configured`) {
		t.Errorf("auth oidc: exit %d %q", code, stderr)
	}
	// KILN_CLIENT_CONFIG names another file (here: none yet, so no context).
	alt := filepath.Join(home, "alt.yaml")
	if _, stderr, code := kiln([]string{"KILN_CLIENT_CONFIG=" + alt}, "", "config", "current-context"); code == 0 || !strings.Contains(stderr, alt) {
		t.Errorf("KILN_CLIENT_CONFIG: exit %d %q", code, stderr)
	}
	if out, _, _ := kiln(nil, "", "--client-config", alt, "config", "set-context", "x", "--server", s.URL); !strings.Contains(out, "created") {
		t.Errorf("--client-config set-context: %q", out)
	}
	if _, err := os.Stat(alt); err != nil {
		t.Errorf("--client-config file: %v", err)
	}
	if out := mustKiln("", "config", "delete-context", "gone"); out != "Deleted context \"gone\".\n" {
		t.Errorf("delete-context: %q", out)
	}
}

// mustKilnDataDir runs the CLI with an explicit --data-dir and returns its error.
func mustKilnDataDir(t *testing.T, env []string, dataDir string, args ...string) error {
	t.Helper()
	_, stderr, code := runKilnIn(t, env, "", append([]string{"--data-dir", dataDir}, args...)...)
	if code != 0 {
		return &exitError{code: code, stderr: stderr}
	}
	return nil
}

type exitError struct {
	code   int
	stderr string
}

func (e *exitError) Error() string { return e.stderr }
