package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startDnsmasq runs dnsmasq (dnsmasq-base) as a DHCP server on the lab's peer host,
// with its own lease file, handing out 10.77.0.150-199. extra adds options (boot
// options for the interop scenario; none for proxy mode). DNS is off (--port=0).
func startDnsmasq(t *testing.T, l *lab, extra ...string) {
	t.Helper()
	requireTools(t, "dnsmasq")
	peer := l.peer
	if peer == "" {
		peer = l.addPeer()
	}
	leases := filepath.Join(l.dir, "dnsmasq.leases")
	logPath := filepath.Join(l.dir, "dnsmasq.log")
	args := []string{"netns", "exec", peer, "dnsmasq",
		"--keep-in-foreground",
		"--conf-file=/dev/null",
		"--port=0",
		"--interface=vpeer1",
		"--bind-interfaces",
		"--dhcp-range=10.77.0.150,10.77.0.199,255.255.255.0,1h",
		"--dhcp-leasefile=" + leases,
		"--pid-file=",
		"--user=root", "--group=root",
		// Without it dnsmasq pings an address before offering it: +3 s per boot.
		"--no-ping",
		"--log-dhcp",
		"--log-facility=" + logPath,
	}
	args = append(args, extra...)
	logf, err := os.Create(logPath + ".stderr")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dnsmasq: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	t.Cleanup(func() {
		stopProcess(cmd, done, 5*time.Second)
		if t.Failed() {
			t.Logf("dnsmasq log (%s):\n%s\n%s", logPath, tail(logPath, 60), tail(logPath+".stderr", 10))
		}
	})
	// Ready once it logs its DHCP range.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "DHCP, IP range") {
			return
		}
		select {
		case <-done:
			t.Fatalf("dnsmasq exited: %s\n%s", tail(logPath, 20), tail(logPath+".stderr", 20))
		case <-ctx.Done():
			t.Fatalf("dnsmasq not ready within 10s: %s\n%s", tail(logPath, 20), tail(logPath+".stderr", 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
