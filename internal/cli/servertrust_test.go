package cli

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/server"
)

// runKiln runs the CLI in-process and returns its output and error.
func runKiln(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(&out, &errOut)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// TestCLIVerifiesServerByCAFingerprint: against the HTTPS API listener, the CLI
// refuses a server whose CA is not the pinned one, trusts a new server on first
// use and remembers its CA fingerprint (known_servers, like ssh's known_hosts),
// and refuses when the remembered fingerprint changes. On the server's own host
// it trusts the CA certificate in the data directory.
func TestCLIVerifiesServerByCAFingerprint(t *testing.T) {
	for _, k := range []string{"KILN_SERVER", "KILN_TOKEN", "KILN_DATA_DIR", "KILN_CA_FINGERPRINT", "KILN_KNOWN_SERVERS"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0", ServerSANs: []string{"127.0.0.1"}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	tok, err := os.ReadFile(filepath.Join(dir, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + srv.APIAddr().String()
	known := filepath.Join(t.TempDir(), "known_servers")
	remote := []string{"--server", url, "--token", strings.TrimSpace(string(tok)), "--data-dir", t.TempDir(), "--known-servers", known}

	_, _, err = runKiln(t, append(remote, "--ca-fingerprint", strings.Repeat("ab", 32), "get", "machines")...)
	if err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("a wrong pinned fingerprint: %v, want a refusal naming the fingerprint", err)
	}
	if _, err := os.Stat(known); err == nil {
		t.Error("a refused server was remembered")
	}

	_, errOut, err := runKiln(t, append(remote, "get", "machines")...)
	if err != nil {
		t.Fatalf("first use: %v", err)
	}
	b, err := os.ReadFile(known)
	if err != nil || !strings.Contains(string(b), srv.APIAddr().String()) || !strings.Contains(string(b), fingerprintOfCA(t, dir)) {
		t.Fatalf("known_servers after first use: %q %v", b, err)
	}
	if !strings.Contains(errOut, fingerprintOfCA(t, dir)) {
		t.Errorf("first use does not tell the fingerprint it trusted: %q", errOut)
	}
	if _, errOut, err := runKiln(t, append(remote, "get", "machines")...); err != nil || errOut != "" {
		t.Fatalf("second use: %v %q", err, errOut)
	}

	// The server's CA "changes": the remembered fingerprint no longer matches.
	if err := os.WriteFile(known, []byte(srv.APIAddr().String()+" "+strings.Repeat("cd", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runKiln(t, append(remote, "get", "machines")...)
	if err == nil || !strings.Contains(err.Error(), "changed") || !strings.Contains(err.Error(), known) {
		t.Fatalf("changed fingerprint: %v, want a refusal naming the file", err)
	}

	// On the server's host: server.url and ca.crt in the data dir, nothing to remember.
	local := filepath.Join(t.TempDir(), "local_known")
	if _, _, err := runKiln(t, "--data-dir", dir, "--known-servers", local, "get", "machines"); err != nil {
		t.Fatalf("local CLI: %v", err)
	}
	if _, err := os.Stat(local); err == nil {
		t.Error("the local CLI wrote known_servers although the data dir has the CA")
	}
}

func fingerprintOfCA(t *testing.T, dir string) string {
	t.Helper()
	fp, err := caFileFingerprint(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return fp
}
