package cli_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kilnhq/kiln/internal/testkit"
)

// dialInNetns dials from a thread moved into the network namespace ns: the socket
// lives there, the rest of the process stays where it is. addr must be an IP
// address (a name would be resolved by goroutines outside the namespace).
func dialInNetns(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer orig.Close()
			target, err := os.Open("/var/run/netns/" + ns)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, fmt.Errorf("enter netns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread() // else the locked thread is discarded with the goroutine
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// Issue 18 item 6: with no server given, the CLI and `kiln agent enroll` find Kiln
// by DNS SRV, served by a real dnsmasq; targets are tried in priority order, a
// dead one is skipped, and a server found by DNS is trusted only by a pinned CA.
// Everything (dnsmasq, kiln serve, the CLI) runs in a network namespace the test
// makes, on its loopback.
func TestDNSSRVDiscovery(t *testing.T) {
	testkit.NeedRoot(t, "network namespaces")
	testkit.NeedTool(t, "ip", "iproute2")
	dnsmasq := testkit.NeedTool(t, "dnsmasq", "dnsmasq-base")
	testkit.Slow(t, "starts kiln serve and dnsmasq")
	ns := fmt.Sprintf("ksrv%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	inNS := func(ctx context.Context, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	}

	// kiln serve inside the namespace, its certificate naming the SRV targets.
	const httpAddr, httpsPort = "127.0.0.1:18080", 18443
	s := testkit.Serve(t, testkit.ServeOptions{
		Command: inNS,
		Args: []string{"--listen", httpAddr, fmt.Sprintf("--https-listen=127.0.0.1:%d", httpsPort),
			"--server-san=kiln.lab.test", "--server-san=kiln2.lab.test"},
		URL:        "http://" + httpAddr,
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dialInNetns(ns)}, Timeout: 5 * time.Second},
	})
	fp := strings.TrimSpace(s.MustKiln("", "ca", "show", "--fingerprint"))

	// lab.test: priority 0 is the HTTPS listener, priority 10 the plain HTTP one
	// (which would fail TLS if it were chosen). fallback.test: priority 0 is a
	// port where nothing listens, so the priority 10 target must be used.
	dir := t.TempDir()
	logPath := filepath.Join(dir, "dnsmasq.log")
	dns := inNS(context.Background(), dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--listen-address=127.0.0.1", "--bind-interfaces", "--port=53", "--pid-file=", "--user=root", "--group=root",
		"--log-queries", "--log-facility="+logPath,
		fmt.Sprintf("--srv-host=_kiln._tcp.lab.test,kiln.lab.test,%d,0,10", httpsPort),
		"--srv-host=_kiln._tcp.lab.test,kiln2.lab.test,18080,10,10",
		"--srv-host=_kiln._tcp.fallback.test,kiln.lab.test,18999,0,10",
		fmt.Sprintf("--srv-host=_kiln._tcp.fallback.test,kiln2.lab.test,%d,10,10", httpsPort),
		"--host-record=kiln.lab.test,127.0.0.1", "--host-record=kiln2.lab.test,127.0.0.1")
	dns.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := dns.Start(); err != nil {
		t.Fatalf("start dnsmasq: %v", err)
	}
	t.Cleanup(func() {
		dns.Process.Signal(syscall.SIGTERM)
		dns.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("dnsmasq log:\n%s", b)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "started") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dnsmasq not ready within 10 s")
		}
	}

	home := t.TempDir()
	empty := t.TempDir() // a data dir without server.url: no server but DNS
	env := append(testkit.CleanEnv(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, "xdg"),
		"KILN_TOKEN="+s.AdminToken, "KILN_DNS_SERVER=127.0.0.1")
	kiln := func(extraEnv []string, args ...string) (string, string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := inNS(ctx, append([]string{testkit.KilnBinary(t), "--data-dir", empty}, args...)...)
		cmd.Env = append(append([]string{}, env...), extraEnv...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), errb.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatalf("kiln %s: %v", strings.Join(args, " "), err)
		}
		return out.String(), errb.String(), 0
	}

	for _, domain := range []string{"lab.test", "fallback.test"} {
		if out, stderr, code := kiln(nil, "--dns-domain", domain, "--ca-fingerprint", fp, "get", "profiles", "-o", "name"); code != 0 {
			t.Errorf("--dns-domain %s: exit %d %q %q", domain, code, out, stderr)
		}
	}
	// The domain from a context, with its pin; the variable form of --dns-domain.
	if _, stderr, code := kiln([]string{"KILN_DNS_DOMAIN=lab.test", "KILN_CA_FINGERPRINT=" + fp}, "version"); code != 0 || strings.Contains(stderr, "trusting") {
		t.Errorf("KILN_DNS_DOMAIN: exit %d %q", code, stderr)
	}
	if _, stderr, code := kiln(nil, "config", "set-context", "lab", "--dns-domain", "lab.test", "--ca-fingerprint", fp); code != 0 {
		t.Fatalf("set-context: %s", stderr)
	}
	if out, stderr, code := kiln(nil, "--context", "lab", "get", "profiles", "-o", "name"); code != 0 {
		t.Errorf("context with dns-domain: exit %d %q %q", code, out, stderr)
	}
	// Not pinned: DNS alone is no reason to trust, and nothing is remembered.
	_, stderr, code := kiln(nil, "--dns-domain", "lab.test", "get", "profiles")
	if code == 0 || !strings.Contains(stderr, "was found by DNS SRV") || !strings.Contains(stderr, "not trusted by that alone") {
		t.Errorf("without a pin: exit %d %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(home, "xdg", "kiln", "known_servers")); err == nil {
		t.Errorf("a server found by DNS was remembered as trusted")
	}
	// Pinned to another CA: refused.
	_, stderr, code = kiln(nil, "--dns-domain", "lab.test", "--ca-fingerprint", strings.Repeat("ab", 32), "get", "profiles")
	if code == 0 || !strings.Contains(stderr, "does not hold the CA") {
		t.Errorf("wrong pin: exit %d %q", code, stderr)
	}
	// A domain without records, asked for explicitly: the error says so.
	_, stderr, code = kiln(nil, "--dns-domain", "none.test", "--ca-fingerprint", fp, "get", "profiles")
	if code == 0 || !strings.Contains(stderr, "_kiln._tcp.none.test") {
		t.Errorf("no records: exit %d %q", code, stderr)
	}

	// kiln agent enroll without --server (and no token naming one): found by DNS,
	// the pinned server reached (it refuses a request without a token, by policy).
	agentDir := filepath.Join(t.TempDir(), "agent")
	_, stderr, code = kiln(nil, "agent", "enroll", "--dns-domain", "fallback.test", "--ca-fingerprint", fp, "--dir", agentDir)
	if !strings.Contains(stderr, fmt.Sprintf("found kiln by DNS SRV: https://kiln2.lab.test:%d", httpsPort)) || !strings.Contains(stderr, "kiln refused (401 Unauthorized): token: missing") {
		t.Errorf("agent enroll by DNS: exit %d %q", code, stderr)
	}
	// kiln agent run on a host that is not enrolled and whose kernel command line
	// names no server: the same lookup, then a real enrollment with a join token.
	s.MustKiln("kind: Profile\nmetadata: {name: hand}\nspec: {boot: {agent: true}}\n", "apply", "-f", "-")
	joinToken := strings.TrimSpace(s.MustKiln("", "join-token", "create", "--profile", "hand", "--max-uses", "1", "--ttl", "10m"))
	_, stderr, code = kiln([]string{"KILN_JOIN_TOKEN=" + joinToken}, "agent", "run", "--once", "--dns-domain", "lab.test", "--ca-fingerprint", fp,
		"--dir", filepath.Join(t.TempDir(), "run"))
	if code != 0 || !strings.Contains(stderr, fmt.Sprintf("found kiln by DNS SRV\" server=https://kiln.lab.test:%d", httpsPort)) || !strings.Contains(stderr, "msg=enrolled") {
		t.Errorf("agent run by DNS: exit %d %q", code, stderr)
	}
	_, stderr, code = kiln(nil, "agent", "enroll", "--dns-domain", "lab.test", "--ca-fingerprint", strings.Repeat("ab", 32), "--dir", agentDir)
	if code == 0 || !strings.Contains(strings.ToLower(stderr), "fingerprint") {
		t.Errorf("agent enroll by DNS with a wrong pin: exit %d %q", code, stderr)
	}
}
