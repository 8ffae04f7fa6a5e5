package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kilnhq/kiln/internal/testkit"
)

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs fn on a thread moved into the named network namespace, so that the
// sockets fn opens live there; the thread is moved back before it is released.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := os.Open("/var/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter netns %s: %v", name, err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: Go discards it when the goroutine ends.
			t.Errorf("leave netns %s: %v", name, err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// TestRogueDHCPFindsDnsmasq puts the doctor and a dnsmasq DHCP server on the two
// ends of a veth pair, each in a network namespace the test makes: the doctor
// must report dnsmasq's OFFER as a foreign server, and accept it when told that
// address is Kiln's own.
func TestRogueDHCPFindsDnsmasq(t *testing.T) {
	testkit.NeedRoot(t, "network namespaces and UDP port 68")
	testkit.NeedTool(t, "ip", "iproute2")
	dnsmasq := testkit.NeedTool(t, "dnsmasq", "dnsmasq-base")
	suffix := fmt.Sprint(os.Getpid() % 100000)
	host, rogue := "kdoc-h"+suffix, "kdoc-r"+suffix
	for _, ns := range []string{host, rogue} {
		ip(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	ip(t, "link", "add", "kd0", "netns", host, "type", "veth", "peer", "name", "kd1", "netns", rogue)
	ip(t, "-n", host, "addr", "add", "10.88.0.2/24", "dev", "kd0")
	ip(t, "-n", host, "link", "set", "kd0", "up")
	ip(t, "-n", rogue, "addr", "add", "10.88.0.1/24", "dev", "kd1")
	ip(t, "-n", rogue, "link", "set", "kd1", "up")

	dir := t.TempDir()
	logPath := filepath.Join(dir, "dnsmasq.log")
	cmd := exec.Command("ip", "netns", "exec", rogue, dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface=kd1", "--bind-interfaces", "--dhcp-range=10.88.0.150,10.88.0.199,255.255.255.0,1h",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file=", "--user=root", "--group=root",
		"--no-ping", "--log-dhcp", "--log-facility="+logPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dnsmasq: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("dnsmasq log:\n%s", b)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "DHCP, IP range") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dnsmasq not ready within 10 s")
		}
	}

	ctx := context.Background()
	var foreign, allowed Finding
	inNetns(t, host, func() {
		foreign = CheckRogueDHCP(ctx, "kd0", 3*time.Second, nil)
		allowed = CheckRogueDHCP(ctx, "kd0", 3*time.Second, []netip.Addr{netip.MustParseAddr("10.88.0.1")})
	})
	if foreign.Status != Fail || !regexp.MustCompile(`10\.88\.0\.1 offered 10\.88\.0\.1[5-9]\d\b`).MatchString(foreign.Detail) {
		t.Errorf("with dnsmasq answering: %v %q, want a failure naming 10.88.0.1 and its offer", foreign.Status, foreign.Detail)
	}
	if allowed.Status != OK || !strings.Contains(allowed.Detail, "1 from Kiln") {
		t.Errorf("with dnsmasq's address as Kiln's own: %v %q, want ok", allowed.Status, allowed.Detail)
	}
}
