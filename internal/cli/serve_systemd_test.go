package cli

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// TestServeReadsDefaultConfigAndNotifiesSystemd starts `kiln serve` with no flag
// at all, only a kiln.yaml at the default path (moved into a temp dir by
// KILN_DEFAULT_CONFIG), under a NOTIFY_SOCKET the test owns, as systemd would
// with Type=notify: READY=1 must come once it serves (at the data dir the file
// names), STOPPING=1 on SIGTERM.
func TestServeReadsDefaultConfigAndNotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "var", "lib", "kiln")
	cfgPath := filepath.Join(dir, "etc", "kiln", "kiln.yaml")
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := "data-dir: " + data + "\nlisten: 127.0.0.1:0\nhttps-listen: 127.0.0.1:0\ntftp-listen: \"\"\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sockPath := filepath.Join(dir, "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()

	cmd := exec.Command(testkit.KilnBinary(t), "serve")
	cmd.Env = append(testkit.CleanEnv(), "KILN_DEFAULT_CONFIG="+cfgPath, "NOTIFY_SOCKET="+sockPath)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("kiln serve log:\n%s", log.String())
		}
	}()

	// Datagrams until one holds want; Kiln may send STATUS= lines beside it.
	await := func(want string) {
		t.Helper()
		buf := make([]byte, 4096)
		for {
			sock.SetReadDeadline(time.Now().Add(60 * time.Second))
			n, err := sock.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s: %v", want, err)
			}
			if lines := strings.Split(string(buf[:n]), "\n"); slices.Contains(lines, want) {
				return
			}
		}
	}
	await("READY=1")
	// Ready means serving, with the settings of the default file: the data dir
	// it names holds the URL of a listener that answers.
	url, err := os.ReadFile(filepath.Join(data, "server.url"))
	if err != nil {
		t.Fatalf("READY=1 sent but the config file's data dir has no server.url: %v", err)
	}
	if !strings.HasPrefix(string(url), "http://127.0.0.1:") {
		t.Fatalf("server.url %q: not the listener of the config file", url)
	}
	resp, err := http.Get(strings.TrimSpace(string(url)) + "/readyz")
	if err != nil {
		t.Fatalf("READY=1 sent but /readyz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("READY=1 sent but /readyz answered %s", resp.Status)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	await("STOPPING=1")
	select {
	case err := <-done:
		done <- err // for the deferred cleanup
		if err != nil {
			t.Fatalf("kiln serve after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("kiln serve still running 30 s after SIGTERM")
	}
}

func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	exists := filepath.Join(dir, "kiln.yaml")
	if err := os.WriteFile(exists, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, given, def, want string }{
		{"given wins", "/given.yaml", exists, "/given.yaml"},
		{"default when it exists", "", exists, exists},
		{"none when the default is absent", "", filepath.Join(dir, "absent.yaml"), ""},
		{"none when no default", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := serveConfigFile(tc.given, tc.def)
			if err != nil || got != tc.want {
				t.Errorf("serveConfigFile(%q, %q) = %q, %v; want %q", tc.given, tc.def, got, err, tc.want)
			}
		})
	}
	// A default path that cannot be examined is an error, not "no file".
	if _, err := serveConfigFile("", filepath.Join(exists, "not-a-dir", "kiln.yaml")); err == nil {
		t.Error("a default path under a regular file was taken for an absent file")
	}
}
