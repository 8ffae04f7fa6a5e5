package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// listen opens a unixgram socket as systemd would for NOTIFY_SOCKET.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifySendsToPathAndAbstractSockets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	abstract := fmt.Sprintf("@kiln-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	for _, name := range []string{path, abstract} {
		t.Run(name, func(t *testing.T) {
			c := listen(t, name)
			n := New(name, "", "", os.Getpid())
			if err := n.Notify(Ready, Status("serving\non :8080")); err != nil {
				t.Fatal(err)
			}
			if got, want := read(t, c), "READY=1\nSTATUS=serving on :8080"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestNotifyWithoutSocketIsANoOp(t *testing.T) {
	n := New("", "", "", 1)
	if n.Enabled() {
		t.Fatal("enabled without NOTIFY_SOCKET")
	}
	if err := n.Notify(Ready); err != nil {
		t.Fatal(err)
	}
}

func TestNotifyRejectsRelativeSocket(t *testing.T) {
	if err := New("relative.sock", "", "", 1).Notify(Ready); err == nil {
		t.Fatal("a relative NOTIFY_SOCKET was accepted")
	}
}

func TestWatchdogInterval(t *testing.T) {
	pid := os.Getpid()
	for _, tc := range []struct {
		name, usec, wpid string
		want             time.Duration
	}{
		{"unset", "", "", 0},
		{"ours", "30000000", fmt.Sprint(pid), 15 * time.Second},
		{"no pid given", "2000000", "", time.Second},
		{"another process's", "30000000", fmt.Sprint(pid + 1), 0},
		{"garbage", "soon", "", 0},
		{"zero", "0", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := New("/run/notify", tc.usec, tc.wpid, pid).WatchdogInterval(); got != tc.want {
				t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: interval %v, want %v", tc.usec, tc.wpid, got, tc.want)
			}
		})
	}
}

func TestRunWatchdogPingsAtHalfThePeriodAndStopsWhenNotAlive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	c := listen(t, path)
	n := New(path, "100000", "", os.Getpid()) // 100 ms: a ping every 50 ms
	ctx, cancel := context.WithCancel(context.Background())
	alive := make(chan error, 1)
	alive <- nil
	done := make(chan error, 1)
	go func() {
		done <- n.RunWatchdog(ctx, func(context.Context) error {
			select {
			case err := <-alive:
				return err
			default:
				return fmt.Errorf("stuck")
			}
		})
	}()
	if got := read(t, c); got != Watchdog {
		t.Fatalf("got %q, want %q", got, Watchdog)
	}
	// alive now fails: no more pings.
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 64)
	if k, err := c.Read(buf); err == nil {
		t.Fatalf("pinged %q while the liveness check failed", buf[:k])
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
