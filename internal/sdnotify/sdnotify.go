// Package sdnotify tells systemd about the service's state (sd_notify(3)) without
// cgo or libsystemd: one unix datagram per message to $NOTIFY_SOCKET. A unit with
// Type=notify is "started" only once READY=1 arrives, so dependent units and
// `systemctl start` wait until Kiln's listeners are really up; WatchdogSec= has
// systemd restart a Kiln that stopped pinging.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Messages of the protocol (sd_notify(3)).
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
	Watchdog = "WATCHDOG=1"
)

// Notifier sends state messages to systemd. The zero Notifier (no socket: not
// started by systemd) sends nothing, so callers need no branch.
type Notifier struct {
	socket string
	// watchdog is half of WATCHDOG_USEC, when the watchdog is meant for this process.
	watchdog time.Duration
}

// New reads what systemd passed: notifySocket is $NOTIFY_SOCKET; watchdogUSec and
// watchdogPID are $WATCHDOG_USEC and $WATCHDOG_PID, pid is this process's id. Only
// main reads the environment; it hands the values here. The watchdog is armed only
// when WATCHDOG_USEC parses and WATCHDOG_PID is empty or names this process (a
// child that inherited the environment must not ping for its parent).
func New(notifySocket, watchdogUSec, watchdogPID string, pid int) *Notifier {
	n := &Notifier{socket: notifySocket}
	usec, err := strconv.ParseUint(watchdogUSec, 10, 63)
	if err != nil || usec == 0 {
		return n
	}
	if watchdogPID != "" && watchdogPID != strconv.Itoa(pid) {
		return n
	}
	// Half the period, as sd_watchdog_enabled(3) recommends: one late ping is
	// not yet a restart.
	n.watchdog = time.Duration(usec) * time.Microsecond / 2
	return n
}

// Enabled reports whether there is a socket to notify.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// WatchdogInterval is how often Run pings, zero when the watchdog is off.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Notify sends one datagram of newline-separated messages ("READY=1",
// "STATUS=serving"). Without a socket it does nothing.
func (n *Notifier) Notify(msgs ...string) error {
	if !n.Enabled() {
		return nil
	}
	name := n.socket
	// A leading '@' names a socket in the abstract namespace: its first byte is NUL
	// (Go's net package makes that translation for a name starting with '@').
	if !strings.HasPrefix(name, "@") && !strings.HasPrefix(name, "/") {
		return fmt.Errorf("notify systemd: NOTIFY_SOCKET %q is neither a path nor an abstract name", name)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd at %s: %w", name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(msgs, "\n"))); err != nil {
		return fmt.Errorf("notify systemd at %s: %w", name, err)
	}
	return nil
}

// Status is a STATUS= message, shown by `systemctl status`. Newlines would start
// another message, so they become spaces.
func Status(s string) string {
	return "STATUS=" + strings.ReplaceAll(s, "\n", " ")
}

// RunWatchdog pings systemd's watchdog at WatchdogInterval until ctx ends; it
// returns at once when the watchdog is off. alive, when not nil, is asked before
// each ping: a process whose main loop is stuck must stop pinging.
func (n *Notifier) RunWatchdog(ctx context.Context, alive func(context.Context) error) error {
	d := n.WatchdogInterval()
	if d <= 0 || !n.Enabled() {
		return nil
	}
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if alive != nil {
			if err := alive(ctx); err != nil {
				// No ping: systemd restarts us when the period runs out.
				continue
			}
		}
		if err := n.Notify(Watchdog); err != nil {
			return err
		}
	}
}
