package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/enroll"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// enrollCLIServer serves the enrollment operator routes (without the API's
// authentication, which its own tests cover) over HTTP and the enrollment and agent
// routes over HTTPS, on an SQLite store.
func enrollCLIServer(t *testing.T) (api *globalFlags, httpsURL string, srv *enroll.Server) {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	st := testkit.OpenSQLite(t, dir)
	err := st.Update(ctx, func(tx store.Tx) error {
		return tx.Create(ctx, &resource.Object{Kind: "Profile", Metadata: resource.Metadata{Name: "worker"}, Spec: json.RawMessage(`{"boot":{"agent":true}}`)})
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err = enroll.New(ctx, st, enroll.Config{DataDir: dir, ServerSANs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	srv.ActorOf = func(*http.Request) string { return "token:cli-test" }
	opMux := http.NewServeMux()
	srv.RegisterOperator(func(method, path, role, summary string, h http.HandlerFunc) { opMux.HandleFunc(method+" "+path, h) })
	hs := httptest.NewServer(opMux)
	t.Cleanup(hs.Close)

	mux := http.NewServeMux()
	srv.Register(mux)
	agentMux := http.NewServeMux()
	srv.RegisterAgent(agentMux)
	mux.Handle("/agent/", srv.AgentAuth(agentMux))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsSrv := &http.Server{Handler: mux, TLSConfig: srv.TLSConfig()}
	go tlsSrv.ServeTLS(ln, "", "")
	t.Cleanup(func() { tlsSrv.Close() })
	return &globalFlags{server: hs.URL, token: "t", dataDir: dir, timeout: 10 * time.Second}, "https://" + ln.Addr().String(), srv
}

func runEnrollCmd(t *testing.T, cmd *cobra.Command, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestEnrollCommands(t *testing.T) {
	g, httpsURL, srv := enrollCLIServer(t)

	out, _, err := runEnrollCmd(t, newCACmd(g), "show", "--fingerprint")
	if err != nil || strings.TrimSpace(out) != srv.CAFingerprint() {
		t.Fatalf("ca show --fingerprint: %q %v", out, err)
	}
	out, _, err = runEnrollCmd(t, newCACmd(g), "show")
	if err != nil || !strings.Contains(out, "BEGIN CERTIFICATE") || !strings.Contains(out, srv.CAFingerprint()) {
		t.Fatalf("ca show: %q %v", out, err)
	}

	out, stderr, err := runEnrollCmd(t, newJoinTokenCmd(g), "create", "--profile", "worker", "--labels", "rack=r1", "--max-uses", "2", "--ttl", "30m", "--cidr", "127.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out)
	if strings.Count(tok, ".") != 2 || strings.Contains(tok, "\n") || !strings.Contains(stderr, "profile worker, 2 use(s)") {
		t.Fatalf("join-token create: stdout %q stderr %q", out, stderr)
	}
	if _, _, err := runEnrollCmd(t, newJoinTokenCmd(g), "create"); err == nil || !strings.Contains(err.Error(), "--profile") {
		t.Fatalf("create without --profile: %v", err)
	}
	if _, _, err := runEnrollCmd(t, newJoinTokenCmd(g), "create", "--profile", "nope"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("create for an unknown profile: %v", err)
	}

	// kiln agent enroll, as on any Linux host (the agent's --server and --join-token).
	dir := filepath.Join(t.TempDir(), "agent")
	ag := &agentFlags{server: httpsURL, joinToken: tok}
	out, _, err = runEnrollCmd(t, agentCmdFrom(agentEnrollCmds(ag)), "enroll", "--ca-fingerprint", srv.CAFingerprint(), "--dir", dir)
	if err != nil || !strings.Contains(out, "enrolled as machine ") {
		t.Fatalf("agent enroll: %q %v", out, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("agent dir: %v %v", fi, err)
	}
	machine := strings.Fields(strings.TrimPrefix(out, "enrolled as machine "))[0]
	machine = strings.TrimSuffix(machine, ":")
	out, _, err = runEnrollCmd(t, agentCmdFrom(agentEnrollCmds(ag)), "renew", "--dir", dir)
	if err != nil || !strings.Contains(out, "not renewing before") {
		t.Fatalf("agent renew (not due): %q %v", out, err)
	}
	out, _, err = runEnrollCmd(t, agentCmdFrom(agentEnrollCmds(ag)), "renew", "--dir", dir, "--force")
	if err != nil || !strings.Contains(out, "renewed") {
		t.Fatalf("agent renew --force: %q %v", out, err)
	}
	// Missing parameters are named.
	if _, _, err := runEnrollCmd(t, agentCmdFrom(agentEnrollCmds(&agentFlags{})), "enroll", "--dir", dir); err == nil || !strings.Contains(err.Error(), "--server") {
		t.Fatalf("agent enroll without --server: %v", err)
	}

	out, _, err = runEnrollCmd(t, newJoinTokenCmd(g), "list")
	if err != nil || !strings.Contains(out, "1/2") || !strings.Contains(out, "cidr=127.0.0.0/8") || strings.Contains(out, tok) {
		t.Fatalf("join-token list: %q %v", out, err)
	}
	id := strings.Fields(strings.Split(out, "\n")[1])[0]
	if out, _, err := runEnrollCmd(t, newJoinTokenCmd(g), "revoke", id); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("join-token revoke: %q %v", out, err)
	}
	if out, _, err := runEnrollCmd(t, newJoinTokenCmd(g), "list"); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("join-token list after revoke: %q %v", out, err)
	}

	certDir := filepath.Join(t.TempDir(), "ipxe")
	out, _, err = runEnrollCmd(t, machineCmdFrom(enrollMachineCmds(g)), "cert", machine, "--out", certDir)
	if err != nil || !strings.Contains(out, "boot certificate serial") {
		t.Fatalf("machine cert: %q %v", out, err)
	}
	if fi, err := os.Stat(filepath.Join(certDir, machine+".key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("exported key: %v %v", fi, err)
	}
	for _, f := range []string{machine + ".crt", "ca.crt"} {
		if b, err := os.ReadFile(filepath.Join(certDir, f)); err != nil || !strings.Contains(string(b), "BEGIN CERTIFICATE") {
			t.Fatalf("%s: %v", f, err)
		}
	}
	out, _, err = runEnrollCmd(t, machineCmdFrom(enrollMachineCmds(g)), "revoke", machine)
	if err != nil || !strings.Contains(out, "revoked certificate serial") {
		t.Fatalf("machine revoke: %q %v", out, err)
	}
	if _, _, err := runEnrollCmd(t, machineCmdFrom(enrollMachineCmds(g)), "revoke", "nope"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("revoke an unknown machine: %v", err)
	}
}

func agentCmdFrom(sub []*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: "agent"}
	c.AddCommand(sub...)
	return c
}

func machineCmdFrom(sub []*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: "machine"}
	c.AddCommand(sub...)
	return c
}
