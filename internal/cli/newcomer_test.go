package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// runKiln runs the binary without a server behind it (commands that fail before any
// request), with env added to a clean environment. It returns stdout, stderr and the
// exit code.
func runKiln(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return runKilnIn(t, env, "", args...)
}

// runKilnIn is runKiln with stdin.
func runKilnIn(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testkit.KilnBinary(t), args...)
	cmd.Env = append(testkit.CleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
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
		{[]string{"get", "machines"}, "one of: table, wide, yaml, json, name"},
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

// recordingListener is an https server that records every request it gets and
// refuses it; its fingerprint makes it a Kiln CA the agent trusts.
type recordingListener struct {
	srv         *httptest.Server
	mu          sync.Mutex
	requests    []string // method, path, headers and body of each request
	fingerprint string
}

func newRecordingListener(t *testing.T) *recordingListener {
	r := &recordingListener{}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s\n", req.Method, req.URL)
		_ = req.Header.Write(&b)
		b.Write(body)
		r.mu.Lock()
		r.requests = append(r.requests, b.String())
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":"refused by the test"}`)
	}))
	t.Cleanup(r.srv.Close)
	sum := sha256.Sum256(r.srv.Certificate().Raw)
	r.fingerprint = hex.EncodeToString(sum[:])
	return r
}

func (r *recordingListener) recorded() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

// Issue 19 item 2: the agent has its own join token and server and never sends the
// operator's API token (KILN_TOKEN) nor enrolls at the operator's KILN_SERVER.
func TestAgentNeverReadsOperatorCredentials(t *testing.T) {
	const apiToken = "kiln_operator_api_token_must_not_leak"
	const joinToken = "join-token-from-KILN_JOIN_TOKEN"
	enroll := newRecordingListener(t)
	operatorAPI := newRecordingListener(t)
	env := []string{"KILN_TOKEN=" + apiToken, "KILN_SERVER=" + operatorAPI.srv.URL, "KILN_JOIN_TOKEN=" + joinToken}

	_, stderr, code := runKiln(t, env, "agent", "enroll", "--server", enroll.srv.URL, "--ca-fingerprint", enroll.fingerprint, "--dir", t.TempDir())
	if code == 0 || !strings.Contains(stderr, "refused by the test") {
		t.Fatalf("agent enroll against a refusing listener: exit %d, stderr %q", code, stderr)
	}
	reqs := enroll.recorded()
	if len(reqs) == 0 {
		t.Fatal("agent enroll sent no request to --server")
	}
	for _, r := range reqs {
		if strings.Contains(r, apiToken) {
			t.Errorf("agent enroll sent the operator's API token:\n%s", r)
		}
	}
	if !strings.Contains(strings.Join(reqs, "\n"), joinToken) {
		t.Errorf("agent enroll did not send KILN_JOIN_TOKEN's join token:\n%s", strings.Join(reqs, "\n"))
	}

	// Without --server, KILN_SERVER (the operator's API) is not the enrollment URL.
	_, stderr, code = runKiln(t, env, "agent", "enroll", "--ca-fingerprint", operatorAPI.fingerprint, "--dir", t.TempDir())
	if code == 0 || !strings.Contains(stderr, "--server: required") {
		t.Errorf("agent enroll without --server: exit %d, stderr %q", code, stderr)
	}
	// KILN_AGENT_SERVER is the agent's own variable.
	_, _, _ = runKiln(t, append(env, "KILN_AGENT_SERVER="+enroll.srv.URL), "agent", "enroll", "--ca-fingerprint", enroll.fingerprint, "--dir", t.TempDir())
	if n := len(enroll.recorded()); n <= len(reqs) {
		t.Errorf("KILN_AGENT_SERVER was not used: %d requests before, %d after", len(reqs), n)
	}
	// --token on an agent command is the operator's flag: refused, not sent.
	_, stderr, code = runKiln(t, nil, "agent", "enroll", "--server", enroll.srv.URL, "--ca-fingerprint", enroll.fingerprint, "--token", apiToken, "--dir", t.TempDir())
	if code == 0 || !strings.Contains(stderr, "--join-token") || strings.Contains(stderr, apiToken) {
		t.Errorf("agent enroll --token: exit %d, stderr %q", code, stderr)
	}
	if got := operatorAPI.recorded(); len(got) != 0 {
		t.Errorf("the agent called the operator's KILN_SERVER:\n%s", strings.Join(got, "\n"))
	}
	for _, r := range enroll.recorded() {
		if strings.Contains(r, apiToken) {
			t.Errorf("an agent command sent the operator's API token:\n%s", r)
		}
	}
}

// Issue 19 item 6: messages say a thing once, suggest near names, and list kinds.
func TestMessagesSayItOnce(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln("", "apply", "-f", "../../examples/")
	bin := []string{"--server", s.URL, "--token", s.AdminToken}

	_, stderr, code := runKiln(t, nil, append(bin, "get", "machine", "wen-1")...)
	want := "Error from server (NotFound): machine \"wen-1\" not found; did you mean web-1?\n"
	if code != 1 || stderr != want {
		t.Errorf("get machine wen-1: exit %d, stderr %q; want %q", code, stderr, want)
	}
	_, stderr, code = runKiln(t, nil, append(bin, "describe", "machine", "nosuch")...)
	if want := "Error from server (NotFound): machine \"nosuch\" not found\n"; code != 1 || stderr != want {
		t.Errorf("describe machine nosuch: exit %d, stderr %q; want %q", code, stderr, want)
	}
	_, stderr, code = runKiln(t, nil, append(bin, "delete", "profile", "debian-12-wbe")...)
	if code != 1 || !strings.Contains(stderr, "did you mean debian-12-web?") || strings.Contains(stderr, "Error: Error") {
		t.Errorf("delete profile debian-12-wbe: exit %d, stderr %q", code, stderr)
	}

	// A misspelt kind suggests the kind, before any request.
	if _, stderr, code := runKiln(t, nil, "get", "machnes"); code != 1 || !strings.Contains(stderr, `unknown kind "machnes"; did you mean machines?`) {
		t.Errorf("get machnes: exit %d %q", code, stderr)
	}

	// kiln get alone lists the kinds, aliases included.
	_, stderr, code = runKiln(t, nil, append(bin, "get")...)
	for _, w := range []string{"give a kind", "machines", "powerjobs", "PowerJob", "tpl"} {
		if code != 1 || !strings.Contains(stderr, w) {
			t.Errorf("kiln get: exit %d, stderr lacks %q:\n%s", code, w, stderr)
		}
	}

	// secret list shows who a secret is released to, by name and by label.
	out := s.MustKiln("", "secret", "list")
	if !strings.Contains(out, "MACHINE-LABELS") || !strings.Contains(out, "role=web") {
		t.Errorf("secret list does not show the label release rule:\n%s", out)
	}
}

// Issue 19 item 6: a server that does not answer in time is reported as a timeout,
// not as unreachable; --request-timeout takes seconds as kubectl's does.
func TestRequestTimeoutMessage(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer slow.Close()
	start := time.Now()
	_, stderr, code := runKiln(t, nil, "--server", slow.URL, "--token", "x", "--request-timeout", "1", "get", "machines")
	if code != 1 || !strings.Contains(stderr, "timed out after 1s") || strings.Contains(stderr, "cannot reach") {
		t.Errorf("slow server: exit %d, stderr %q", code, stderr)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("a 1 s timeout took %s", d)
	}
	_, stderr, code = runKiln(t, nil, "--server", slow.URL, "--request-timeout", "1.5s", "--request-timeout", "bogus", "get", "machines")
	if code != 1 || !strings.Contains(stderr, "number of seconds") {
		t.Errorf("--request-timeout bogus: exit %d, stderr %q", code, stderr)
	}
}
