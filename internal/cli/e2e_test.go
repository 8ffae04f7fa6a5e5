package cli_test

import (
	"bytes"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/testkit"
)

// These tests run the real `kiln` binary: the server in a child process (so that it
// can be killed with SIGKILL and restarted) and the CLI as an operator would.

func TestMain(m *testing.M) { os.Exit(testkit.Main(func() int { return pgtest.Main(m) })) }

// startServer starts `kiln serve` on free loopback ports in dataDir, with extra
// args and env.
func startServer(t *testing.T, dataDir string, env []string, args ...string) *testkit.Server {
	t.Helper()
	testkit.Slow(t, "starts kiln serve")
	return testkit.Serve(t, testkit.ServeOptions{DataDir: dataDir, Env: env, Args: args})
}

func auditCount(t *testing.T, s *testkit.Server) int {
	t.Helper()
	var out struct{ Items []json.RawMessage }
	if err := json.Unmarshal([]byte(s.MustKiln("", "audit", "list", "--after", "0", "--limit", "100000", "-o", "json")), &out); err != nil {
		t.Fatal(err)
	}
	return len(out.Items)
}

var allKinds = []string{"artifacts", "templates", "secrets", "profiles", "subnets", "machines"}

func TestApplyGetYAMLReapplyIsNoop(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	out := s.MustKiln("", "apply", "-f", "../../examples/")
	if !strings.Contains(out, "machine/web-1 created") || !strings.Contains(out, "profile/debian-12-web created") {
		t.Fatalf("apply output:\n%s", out)
	}
	before := auditCount(t, s)
	if before == 0 {
		t.Fatal("apply left no audit entries")
	}
	// Every kind, exported as YAML, re-applies with nothing changed.
	var all strings.Builder
	for _, k := range allKinds {
		y := s.MustKiln("", "get", k, "-o", "yaml")
		if all.Len() > 0 {
			all.WriteString("---\n")
		}
		all.WriteString(y)
	}
	out = s.MustKiln(all.String(), "apply", "-f", "-")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasSuffix(line, " unchanged") {
			t.Errorf("re-apply of -o yaml changed something: %q", line)
		}
	}
	if after := auditCount(t, s); after != before {
		t.Fatalf("re-apply added audit entries: %d -> %d", before, after)
	}
	// The examples again are a no-op too.
	s.MustKiln("", "apply", "-f", "../../examples/")
	if after := auditCount(t, s); after != before {
		t.Fatalf("second apply of the examples added audit entries: %d -> %d", before, after)
	}

	// The table is aligned like kubectl's: every column starts at the same offset.
	table := s.MustKiln("", "get", "machines")
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("table:\n%s", table)
	}
	col := strings.Index(lines[0], "PROFILE")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Fatalf("PROFILE column not aligned at %d:\n%s", col, table)
		}
	}
	if !strings.Contains(table, "52:54:00:12:34:01") {
		t.Fatalf("table lacks the MAC column:\n%s", table)
	}
	sel := s.MustKiln("", "get", "machines", "-l", "role=web,rack=r1", "-o", "name")
	if sel != "machine/web-1\nmachine/web-2\n" {
		t.Fatalf("selector: %q", sel)
	}
	desc := s.MustKiln("", "describe", "machine", "web-1")
	for _, want := range []string{"Name:              web-1", "rack=r1,role=web,site=ams1", "Events:", "InventoryCreate"} {
		if !strings.Contains(desc, want) {
			t.Errorf("describe lacks %q:\n%s", want, desc)
		}
	}
}

func TestApplyWithOneBadDocumentWritesNothing(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	before := auditCount(t, s) // first start: the admin token, the CA
	dir := t.TempDir()
	good := "kind: Machine\nmetadata: {name: a-1}\nspec: {interfaces: [{mac: '52:54:00:00:00:01'}]}\n---\nkind: Machine\nmetadata: {name: a-2}\n"
	bad := "kind: Machine\nmetadata: {name: web-1}\nspec:\n  interfaces:\n    - mac: \"zz:01\"\n"
	os.WriteFile(filepath.Join(dir, "1-good.yaml"), []byte(good), 0o644)
	os.WriteFile(filepath.Join(dir, "2-bad.yaml"), []byte(bad), 0o644)
	_, err := s.Kiln("", "apply", "-f", dir)
	if err == nil || !strings.Contains(err.Error(), `2-bad.yaml: document 1: machine "web-1": spec.interfaces[0].mac: "zz:01" is not a MAC address`) {
		t.Fatalf("apply error: %v", err)
	}
	// A MAC already owned by another machine, refused by the server inside the transaction.
	os.WriteFile(filepath.Join(dir, "2-bad.yaml"), []byte("kind: Machine\nmetadata: {name: a-3}\nspec: {interfaces: [{mac: '52-54-00-00-00-01'}]}\n"), 0o644)
	_, err = s.Kiln("", "apply", "-f", dir)
	if err == nil || !strings.Contains(err.Error(), `already claimed by Machine "a-1"`) {
		t.Fatalf("duplicate MAC apply error: %v", err)
	}
	if out := s.MustKiln("", "get", "machines"); !strings.Contains(out, "No machines found") {
		t.Fatalf("a refused apply wrote objects:\n%s", out)
	}
	if n := auditCount(t, s); n != before {
		t.Fatalf("a refused apply wrote %d audit entries", n-before)
	}
}

func TestRestartAfterKill9KeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, nil)
	s.MustKiln("", "apply", "-f", "../../examples/")
	snapshot := func(s *testkit.Server) string {
		var b strings.Builder
		for _, k := range allKinds {
			b.WriteString(s.MustKiln("", "get", k, "-o", "json"))
		}
		b.WriteString(s.MustKiln("", "audit", "list", "--after", "0", "--limit", "100000", "-o", "json"))
		return b.String()
	}
	before := snapshot(s)
	if err := s.Signal(syscall.SIGKILL); err == nil {
		t.Log("kill -9")
	}
	s2 := startServer(t, dir, nil)
	if after := snapshot(s2); after != before {
		t.Fatalf("state differs after kill -9 and restart")
	}
	if out := s2.MustKiln("", "audit", "verify"); !strings.Contains(out, "audit chain OK") {
		t.Fatalf("verify after restart: %s", out)
	}
	// No second admin token was made: the first one still works and is the only one.
	if out := s2.MustKiln("", "api-token", "list"); strings.Count(out, "bootstrap-admin") != 1 {
		t.Fatalf("tokens after restart:\n%s", out)
	}
	// SIGTERM is a clean shutdown.
	if err := s2.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, s2.Log)
	}
	if !strings.Contains(s2.Log.String(), "shutting down") {
		t.Fatalf("no graceful shutdown in the log:\n%s", s2.Log)
	}
}

func TestAuditVerifyDetectsTampering(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, nil)
	s.MustKiln("", "apply", "-f", "../../examples/")
	if out := s.MustKiln("", "audit", "verify"); !strings.Contains(out, "audit chain OK") {
		t.Fatalf("verify: %s", out)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "kiln.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("UPDATE audit SET summary = 'created' WHERE seq = 3"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Kiln("", "audit", "verify")
	if err == nil || !strings.Contains(err.Error(), "entry 3: hash mismatch: the entry was modified") {
		t.Fatalf("verify after an edit: %v", err)
	}
}

// TestAuditVerifyTamperCases runs each tampering on a fresh server.
func TestAuditVerifyTamperCases(t *testing.T) {
	cases := []struct {
		name, sql, want string
	}{
		{"delete middle", "DELETE FROM audit WHERE seq = 3", "expected sequence 3"},
		{"delete newest", "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)", "entries were removed"},
		{"reorder", "UPDATE audit SET seq = CASE seq WHEN 3 THEN 4 WHEN 4 THEN 3 END WHERE seq IN (3, 4)", "chain was broken"},
		{"forge actor", "UPDATE audit SET actor = 'token:someone-else' WHERE seq = 2", "entry 2: hash mismatch"},
		// Issue 14 item 5: the newest entries go, and the head the database records
		// moves back with them; only the head anchored beside the KEK remembers.
		{"delete newest with the stored head", `DELETE FROM audit WHERE seq > (SELECT max(seq) - 2 FROM audit);
			UPDATE meta SET audit_seq = (SELECT max(seq) FROM audit), audit_hash = (SELECT hash FROM audit WHERE seq = (SELECT max(seq) FROM audit)) WHERE id = 1`,
			"the newest entries were removed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := startServer(t, dir, nil)
			s.MustKiln("", "apply", "-f", "../../examples/")
			db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "kiln.db")+"?_pragma=busy_timeout(5000)")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if c.name == "reorder" {
				// Swap two rows' contents through a temporary sequence number.
				for _, q := range []string{"UPDATE audit SET seq = -1 WHERE seq = 3", "UPDATE audit SET seq = 3 WHERE seq = 4", "UPDATE audit SET seq = 4 WHERE seq = -1"} {
					if _, err := db.Exec(q); err != nil {
						t.Fatal(err)
					}
				}
			} else if _, err := db.Exec(c.sql); err != nil {
				t.Fatal(err)
			}
			_, err = s.Kiln("", "audit", "verify")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("verify after %s: %v, want %q", c.name, err, c.want)
			}
		})
	}
}

func TestRolesThroughCLI(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	viewer := strings.TrimSpace(s.MustKiln("", "api-token", "create", "--role", "viewer", "--name", "ro"))
	run := func(token string, args ...string) error {
		cmd := exec.Command(testkit.KilnBinary(t), append([]string{"--server", s.URL}, args...)...)
		cmd.Env = append(testkit.CleanEnv(), "KILN_TOKEN="+token, "KILN_DATA_DIR=/nonexistent")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := run(viewer, "get", "machines"); err != nil {
		t.Fatalf("viewer get: %v", err)
	}
	if err := run(viewer, "apply", "-f", "../../examples/"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Fatalf("viewer apply: %v, want 403", err)
	}
	if err := run("", "get", "machines"); err == nil || !strings.Contains(err.Error(), "Unauthorized") {
		t.Fatalf("no token: %v, want 401", err)
	}
	list := s.MustKiln("", "api-token", "list")
	if strings.Contains(list, viewer) {
		t.Fatal("token list shows a token")
	}
	var id string
	for _, l := range strings.Split(list, "\n") {
		if strings.Contains(l, " ro ") {
			id = strings.Fields(l)[0]
		}
	}
	s.MustKiln("", "api-token", "revoke", id)
	if err := run(viewer, "get", "machines"); err == nil || !strings.Contains(err.Error(), "Unauthorized") {
		t.Fatalf("revoked token: %v, want 401", err)
	}
	// The admin token file is private.
	st, err := os.Stat(filepath.Join(s.DataDir, "admin.token"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v %v", st.Mode(), err)
	}
}

func TestServeConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kiln.yaml")
	os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nlog-format: json\nmax-body-bytes: 2048\n"), 0o644)
	data := filepath.Join(dir, "data")

	// File only: JSON logs, body limit 2048.
	s := startServer(t, data, nil, "--config", cfg)
	if !strings.Contains(s.Log.String(), `"msg":"kiln serving"`) {
		t.Fatalf("config file log-format not applied:\n%s", s.Log)
	}
	body := `{"objects":[` + strings.Repeat(" ", 3000) + `]}`
	tok, _ := os.ReadFile(filepath.Join(data, "admin.token"))
	req, _ := http.NewRequest("POST", s.URL+"/api/v1/apply", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("max-body-bytes from the config file: status %d, want 413", resp.StatusCode)
	}
	s.Signal(syscall.SIGTERM)

	// The environment beats the file; a flag beats the environment.
	s = startServer(t, data, []string{"KILN_LOG_FORMAT=text", "KILN_MAX_BODY_BYTES=1048576"}, "--config", cfg)
	if strings.Contains(s.Log.String(), `"msg":`) || !strings.Contains(s.Log.String(), "msg=\"kiln serving\"") {
		t.Fatalf("KILN_LOG_FORMAT did not win over the file:\n%s", s.Log)
	}
	s.Signal(syscall.SIGTERM)
	s = startServer(t, data, []string{"KILN_LOG_FORMAT=text"}, "--config", cfg, "--log-format", "json")
	if !strings.Contains(s.Log.String(), `"msg":"kiln serving"`) {
		t.Fatalf("--log-format did not win over the environment:\n%s", s.Log)
	}
	s.Signal(syscall.SIGTERM)

	// An unknown key is an error that names it.
	os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nlisten-port: 9\n"), 0o644)
	cmd := exec.Command(testkit.KilnBinary(t), "serve", "--data-dir", data, "--config", cfg)
	cmd.Env = testkit.CleanEnv()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "listen-port: unknown setting") {
		t.Fatalf("unknown config key: %v %s", err, out)
	}
}

func TestServeHelpDocumentsSettings(t *testing.T) {
	testkit.Slow(t, "builds the kiln binary")
	out, err := exec.Command(testkit.KilnBinary(t), "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--data-dir", "--database", "--listen", "0.0.0.0:8080", "--config", "KILN_DATABASE", "--max-body-bytes", "--log-format"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("kiln serve --help lacks %q", want)
		}
	}
	v, err := exec.Command(testkit.KilnBinary(t), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(v), "kiln ") {
		t.Fatalf("version: %s %v", v, err)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln("", "get", "machines")
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(s.URL + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`kiln_http_requests_total{code="200",route="GET /api/v1/{kind}"}`,
		`kiln_http_request_duration_seconds_bucket{route="GET /api/v1/{kind}"`,
		`kiln_store_operation_duration_seconds_count{op="view"}`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestPostgresStoreThroughCLI runs the operator path on PostgreSQL: apply, kill -9,
// restart, everything still there; and two servers (replicas) on one database see each
// other's writes and share one audit chain.
func TestPostgresStoreThroughCLI(t *testing.T) {
	url := pgtest.NewDatabase(t)
	dir := t.TempDir()
	s := startServer(t, dir, nil, "--database", url)
	s.MustKiln("", "apply", "-f", "../../examples/")
	before := s.MustKiln("", "get", "machines", "-o", "json")
	s.Signal(syscall.SIGKILL)
	s = startServer(t, dir, nil, "--database", url)
	if after := s.MustKiln("", "get", "machines", "-o", "json"); after != before {
		t.Fatalf("machines differ after kill -9 and restart on PostgreSQL")
	}
	// A second replica with its own data dir: it finds the admin token already made
	// (no second bootstrap), so the operator uses the first one's token.
	// Replicas share the key-encryption key (secrets are sealed under it).
	dir2 := t.TempDir()
	r2 := startServer(t, dir2, nil, "--database", url, "--kek-file", filepath.Join(dir, "kek.key"))
	if _, err := os.Stat(filepath.Join(dir2, "admin.token")); err == nil {
		t.Fatal("the second replica made another admin token")
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	cmd := exec.Command(testkit.KilnBinary(t), "--server", r2.URL, "--token", strings.TrimSpace(string(tok)), "apply", "-f", "-")
	cmd.Env = testkit.CleanEnv()
	cmd.Stdin = strings.NewReader("kind: Machine\nmetadata: {name: via-replica-2}\nspec: {interfaces: [{mac: '52:54:00:99:00:01'}]}\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply through replica 2: %v %s", err, out)
	}
	if out := s.MustKiln("", "get", "machine", "via-replica-2", "-o", "name"); out != "machine/via-replica-2\n" {
		t.Fatalf("replica 1 does not see replica 2's write: %q", out)
	}
	if out := s.MustKiln("", "audit", "verify"); !strings.Contains(out, "audit chain OK") {
		t.Fatalf("verify: %s", out)
	}
}

func TestReprovisionShowsWorkflow(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln("", "apply", "-f", "../../examples/")
	out := s.MustKiln("", "machine", "reprovision", "web-1")
	if !strings.Contains(out, "machine/web-1 reprovisioning: workflow web-1-") || !strings.Contains(out, "(3 actions)") {
		t.Fatalf("reprovision: %s", out)
	}
	desc := s.MustKiln("", "describe", "machine", "web-1")
	for _, want := range []string{"state: provisioning", "Workflow:          web-1-", "(pending)", "stream-image   image2disk   pending", "WorkflowCreated"} {
		if !strings.Contains(desc, want) {
			t.Errorf("describe lacks %q:\n%s", want, desc)
		}
	}
	if _, err := s.Kiln("", "machine", "reprovision", "nope"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("reprovision of a missing machine: %v", err)
	}
	// db-1's profile names no workflow template.
	if _, err := s.Kiln("", "machine", "reprovision", "db-1"); err == nil || !strings.Contains(err.Error(), "names no workflow template") {
		t.Fatalf("reprovision without a template: %v", err)
	}
	if out := s.MustKiln("", "logs", "machine", "web-1"); strings.TrimSpace(out) != "" {
		t.Fatalf("logs before any agent: %q", out)
	}
}

// TestPowerThroughCLI drives a real QEMU process's QMP socket through kiln serve:
// status, power on, and the job recorded as a PowerJob with events and audit.
func TestPowerThroughCLI(t *testing.T) {
	qemu := testkit.NeedTool(t, "qemu-system-x86_64", "qemu-system-x86")
	dir := t.TempDir()
	sock := filepath.Join(dir, "vm.qmp")
	vm := exec.Command(qemu, "-machine", "none", "-S", "-display", "none", "-nodefaults", "-qmp", "unix:"+sock+",server=on,wait=off")
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Process.Kill(); vm.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln(fmt.Sprintf("kind: Machine\nmetadata: {name: lab-1}\nspec: {bmc: {driver: qemu, address: \"unix://%s\"}}\n---\nkind: Machine\nmetadata: {name: nobmc}\n", sock), "apply", "-f", "-")
	out := s.MustKiln("", "machine", "power", "status", "lab-1")
	if !strings.Contains(out, "succeeded   off") {
		t.Fatalf("status of a stopped VM:\n%s", out)
	}
	out = s.MustKiln("", "machine", "power", "on", "lab-1", "--wait")
	if !strings.Contains(out, "lab-1") || !strings.Contains(out, "succeeded") {
		t.Fatalf("power on:\n%s", out)
	}
	if out := s.MustKiln("", "machine", "power", "status", "lab-1"); !strings.Contains(out, "succeeded   on") {
		t.Fatalf("status after power on:\n%s", out)
	}
	if _, err := s.Kiln("", "machine", "power", "on", "nobmc"); err == nil || !strings.Contains(err.Error(), `machine "nobmc" has no spec.bmc`) {
		t.Fatalf("power without a BMC: %v", err)
	}
	if jobs := s.MustKiln("", "get", "powerjobs"); strings.Count(jobs, "lab-1") != 3 {
		t.Fatalf("power jobs:\n%s", jobs)
	}
	if desc := s.MustKiln("", "describe", "machine", "lab-1"); !strings.Contains(desc, "PowerSucceeded") {
		t.Fatalf("no power event:\n%s", desc)
	}
	if _, err := s.Kiln("kind: PowerJob\nmetadata: {name: x}\nspec: {machine: lab-1, op: on}\n", "apply", "-f", "-"); err == nil || !strings.Contains(err.Error(), "written by Kiln only") {
		t.Fatalf("applying a PowerJob: %v", err)
	}
}

// TestEnrollThroughBinary: an operator makes a single-use join token; a host enrolls
// with `kiln agent enroll` over HTTPS (CA pinned by fingerprint), the token is then
// used up, and the machine's certificate opens the agent API over mTLS with curl.
func TestEnrollThroughBinary(t *testing.T) {
	s, httpsAddr := httpsServer(t)
	s.MustKiln("", "apply", "-f", "../../examples/")
	token := strings.TrimSpace(s.MustKiln("", "join-token", "create", "--profile", "debian-12-web", "--labels", "rack=r9", "--max-uses", "1", "--ttl", "10m"))
	fp := strings.TrimSpace(s.MustKiln("", "ca", "show", "--fingerprint"))
	if len(strings.ReplaceAll(fp, ":", "")) != 64 {
		t.Fatalf("ca show --fingerprint: %q", fp)
	}
	agentDir := filepath.Join(t.TempDir(), "agent")
	enroll := func(dir string) (string, error) {
		cmd := exec.Command(testkit.KilnBinary(t), "agent", "enroll", "--server", "https://"+httpsAddr, "--ca-fingerprint", fp, "--join-token", token, "--dir", dir)
		cmd.Env = testkit.CleanEnv()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := enroll(agentDir); err != nil {
		t.Fatalf("agent enroll: %v\n%s", err, out)
	}
	st, err := os.Stat(agentDir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("agent dir: %v %v", st.Mode(), err)
	}
	// The token allowed one enrollment.
	if out, err := enroll(filepath.Join(t.TempDir(), "again")); err == nil || !strings.Contains(out, "used") {
		t.Fatalf("second enrollment with a single-use token: %v\n%s", err, out)
	}
	// A wrong pin fails before the token is sent.
	cmd := exec.Command(testkit.KilnBinary(t), "agent", "enroll", "--server", "https://"+httpsAddr, "--ca-fingerprint", strings.Repeat("ab", 32), "--join-token", token, "--dir", filepath.Join(t.TempDir(), "pin"))
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(strings.ToLower(string(out)), "fingerprint") {
		t.Fatalf("wrong CA pin: %v\n%s", err, out)
	}
	// The new machine carries the token's labels and its certificate fingerprint.
	machines := s.MustKiln("", "get", "machines", "-l", "rack=r9", "-o", "json")
	if !strings.Contains(machines, `"certFingerprint"`) || !strings.Contains(machines, `"profile": "debian-12-web"`) {
		t.Fatalf("enrolled machine:\n%s", machines)
	}
	curl := testkit.NeedTool(t, "curl", "curl")
	files, _ := filepath.Glob(filepath.Join(agentDir, "*"))
	var cert, key, ca string
	for _, f := range files {
		switch b := filepath.Base(f); {
		case strings.Contains(b, "ca"):
			ca = f
		case strings.Contains(b, "key"):
			key = f
		case strings.Contains(b, "cert") || strings.HasSuffix(b, ".crt"):
			cert = f
		}
	}
	if cert == "" || key == "" || ca == "" {
		t.Fatalf("agent dir holds %v", files)
	}
	out, err := exec.Command(curl, "-sS", "--cacert", ca, "--cert", cert, "--key", key, "-o", "/dev/null", "-w", "%{http_code}", "https://"+httpsAddr+"/agent/v1/self").CombinedOutput()
	if err != nil || string(out) != "200" {
		t.Fatalf("mTLS call with the machine certificate: %v %s", err, out)
	}
	out, _ = exec.Command(curl, "-sS", "--cacert", ca, "-o", "/dev/null", "-w", "%{http_code}", "https://"+httpsAddr+"/agent/v1/workflow").CombinedOutput()
	if string(out) != "401" {
		t.Fatalf("agent API without a certificate: %s", out)
	}
}

// httpsServer starts kiln serve with its HTTPS listener on a free loopback port.
func httpsServer(t *testing.T) (*testkit.Server, string) {
	t.Helper()
	return httpsServerWith(t)
}

// httpsServerWith is httpsServer with extra serve flags.
func httpsServerWith(t *testing.T, args ...string) (*testkit.Server, string) {
	t.Helper()
	testkit.Slow(t, "starts kiln serve")
	s := testkit.Serve(t, testkit.ServeOptions{DataDir: t.TempDir(), HTTPS: true, Args: args})
	return s, s.HTTPSAddr
}

// enrollAgent makes a join token with the given flags and enrolls a new host with it;
// it returns the agent's directory.
func enrollAgent(t *testing.T, s *testkit.Server, httpsAddr string, tokenArgs ...string) string {
	t.Helper()
	token := strings.TrimSpace(s.MustKiln("", append([]string{"join-token", "create"}, tokenArgs...)...))
	fp := strings.TrimSpace(s.MustKiln("", "ca", "show", "--fingerprint"))
	dir := filepath.Join(t.TempDir(), "agent")
	cmd := exec.Command(testkit.KilnBinary(t), "agent", "enroll", "--server", "https://"+httpsAddr, "--ca-fingerprint", fp, "--join-token", token, "--dir", dir)
	cmd.Env = testkit.CleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("agent enroll: %v\n%s", err, out)
	}
	return dir
}

// curlAs calls Kiln's HTTPS listener with an agent's certificate.
func curlAs(t *testing.T, agentDir, url string) (int, string) {
	t.Helper()
	curl := testkit.NeedTool(t, "curl", "curl")
	files, _ := filepath.Glob(filepath.Join(agentDir, "*"))
	args := []string{"-sS", "-w", "\n%{http_code}"}
	for _, f := range files {
		switch b := filepath.Base(f); {
		case strings.Contains(b, "ca"):
			args = append(args, "--cacert", f)
		case strings.Contains(b, "key"):
			args = append(args, "--key", f)
		case strings.Contains(b, "cert") || strings.HasSuffix(b, ".crt"):
			args = append(args, "--cert", f)
		}
	}
	out, err := exec.Command(curl, append(args, url)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v %s", url, err, out)
	}
	body, code, _ := strings.Cut(strings.TrimSpace(string(out))+"\n", "\n")
	if i := strings.LastIndex(strings.TrimSpace(string(out)), "\n"); i >= 0 {
		body, code = string(out)[:i], strings.TrimSpace(string(out)[i+1:])
	}
	n, _ := strconv.Atoi(code)
	return n, body
}

// TestSecretsOverMTLSThroughBinary: a secret whose release rule is a label reaches the
// machine that a token labelled, inlined in its Ignition config over mTLS; another
// machine's certificate gets a refusal naming the secret; the release is audited; the
// value is nowhere in the database file in clear.
func TestSecretsOverMTLSThroughBinary(t *testing.T) {
	s, addr := httpsServer(t)
	const value = "kiln-e2e-s3cret-value-7f3a"
	s.MustKiln(`kind: Artifact
metadata: {name: k}
spec: {source: vmlinuz}
---
kind: Secret
metadata: {name: db-password}
spec: {labels: {role: db}}
---
kind: Profile
metadata: {name: db}
spec:
  boot: {kernel: k}
  secrets: [db-password]
  configs:
    ignition: '{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/etc/db-password", "mode": 384, "contents": {"source": {{ secret "db-password" | dataURL | toJson }}}}]}}'
`, "apply", "-f", "-")
	secretFile := filepath.Join(t.TempDir(), "v")
	os.WriteFile(secretFile, []byte(value), 0o600)
	s.MustKiln("", "secret", "set", "db-password", "--from-file", secretFile)

	agent := enrollAgent(t, s, addr, "--profile", "db", "--machine", "db-a")
	encoded := base64.StdEncoding.EncodeToString([]byte(value))
	// Not labelled role=db yet: the render fails closed, naming the secret.
	code, body := curlAs(t, agent, "https://"+addr+"/config/ignition")
	if code == 200 || strings.Contains(body, encoded) || !strings.Contains(body, "db-password") {
		t.Fatalf("ignition for a machine the rule does not allow: %d %s", code, body)
	}
	// The operator labels the machine: now the secret is released to it.
	m := s.MustKiln("", "get", "machine", "db-a", "-o", "yaml")
	m = strings.Replace(m, "metadata:\n", "metadata:\n  labels: {role: db}\n", 1)
	s.MustKiln(m, "apply", "-f", "-")
	code, body = curlAs(t, agent, "https://"+addr+"/config/ignition")
	if code != 200 || !strings.Contains(body, encoded) {
		t.Fatalf("ignition after the operator's label: %d %s", code, body)
	}
	// Another machine's config by name: refused.
	if code, _ := curlAs(t, agent, "https://"+addr+"/config/ignition?machine=db-b"); code != 403 {
		t.Fatalf("asking for another machine's config: %d, want 403", code)
	}
	audit := s.MustKiln("", "audit", "list", "--secret", "db-password")
	if !strings.Contains(audit, "mtls") {
		t.Fatalf("release not audited:\n%s", audit)
	}
	if strings.Contains(audit, value) {
		t.Fatal("the audit log carries the value")
	}
	for _, f := range []string{"kiln.db", "kiln.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(s.DataDir, f))
		if strings.Contains(string(b), value) || strings.Contains(string(b), encoded) {
			t.Fatalf("%s holds the secret in clear", f)
		}
	}
	if strings.Contains(s.Log.String(), value) {
		t.Fatal("the server log carries the value")
	}
}

// TestImpossibleTemplateRefusedAtApply: what can be known about a workflow template
// before any machine runs it is refused when it is applied, with the field's path.
func TestImpossibleTemplateRefusedAtApply(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	_, err := s.Kiln(`kind: Template
metadata: {name: bad-layout}
spec:
  actions:
    - name: disk
      type: partition
      args:
        disk: /dev/vda
        partitions:
          - {label: root, size: rest}
          - {label: data, size: rest}
`, "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), `template "bad-layout": spec.actions[0] (disk).args.partitions[1].size: only one partition can take the rest`) {
		t.Fatalf("impossible layout: %v", err)
	}
	if out := s.MustKiln("", "get", "templates"); !strings.Contains(out, "No templates found") {
		t.Fatalf("a refused template was stored:\n%s", out)
	}
}
