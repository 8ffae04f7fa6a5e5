package power

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// The qemu driver speaks QMP, QEMU's JSON machine protocol, on a lab VM's unix
// socket (qemu ... -qmp unix:/run/vm1.qmp,server=on,wait=off -no-shutdown). See New
// for how power states map onto QMP.

type qemu struct {
	socket      string
	opts        Options
	pendingBoot Device // for the next launch, when the VM is not running
}

func newQEMU(bmc resource.BMC, opts Options) (*qemu, error) {
	s := strings.TrimSpace(bmc.Address)
	s = strings.TrimPrefix(s, "unix://")
	s = strings.TrimPrefix(s, "unix:")
	if s == "" || !strings.HasPrefix(s, "/") {
		return nil, fmt.Errorf("%w: spec.bmc.address: the qemu driver needs the QMP socket's absolute path (unix:///run/vm.qmp)", ErrConfig)
	}
	return &qemu{socket: s, opts: opts}, nil
}

func (q *qemu) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("qemu %s: %s: %w", q.socket, op, err)
}

// errNoVM: nothing listens on the QMP socket (QEMU is not running).
var errNoVM = errors.New("no QEMU listens on the QMP socket")

// qmpConn is one QMP session. Commands are sent one at a time; asynchronous
// events interleaved with the answers are skipped.
type qmpConn struct {
	c       net.Conn
	sc      *bufio.Scanner
	timeout time.Duration
	stop    func() bool // unregisters the close-on-cancel hook
}

type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (q *qemu) dial(ctx context.Context) (*qmpConn, error) {
	dctx, cancel := context.WithTimeout(ctx, q.opts.RequestTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "unix", q.socket)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w: %w", ErrUnreachable, errNoVM)
		}
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	// Deadlines bound each read and write; cancelling ctx closes the socket.
	qc := &qmpConn{c: c, sc: sc, timeout: q.opts.RequestTimeout}
	qc.stop = context.AfterFunc(ctx, func() { c.Close() })
	// The greeting ({"QMP": {...}}), then capability negotiation.
	if err := qc.read(func(m map[string]json.RawMessage) bool { _, ok := m["QMP"]; return ok }); err != nil {
		qc.Close()
		return nil, fmt.Errorf("QMP greeting: %w", err)
	}
	if err := qc.exec("qmp_capabilities", nil, nil); err != nil {
		qc.Close()
		return nil, err
	}
	return qc, nil
}

func (c *qmpConn) Close() error {
	c.stop()
	return c.c.Close()
}

// read reads messages until done accepts one.
func (c *qmpConn) read(done func(map[string]json.RawMessage) bool) error {
	_ = c.c.SetReadDeadline(time.Now().Add(c.timeout))
	for c.sc.Scan() {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(c.sc.Bytes(), &m); err != nil {
			return fmt.Errorf("%w: QMP message: %v", ErrMalformed, err)
		}
		if done(m) {
			return nil
		}
	}
	if err := c.sc.Err(); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("%w: QMP: no answer within %s", ErrUnreachable, c.timeout)
		}
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%w: QMP message too long", ErrMalformed)
		}
		return fmt.Errorf("%w: QMP: %v", ErrUnreachable, err)
	}
	return fmt.Errorf("%w: QMP connection closed", ErrUnreachable)
}

// exec runs one command and decodes its "return" into out (when not nil).
func (c *qmpConn) exec(cmd string, args any, out any) error {
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	b, _ := json.Marshal(msg)
	_ = c.c.SetWriteDeadline(time.Now().Add(c.timeout))
	if _, err := c.c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%w: QMP %s: %v", ErrUnreachable, cmd, err)
	}
	var ret json.RawMessage
	var qerr *qmpError
	err := c.read(func(m map[string]json.RawMessage) bool {
		if r, ok := m["return"]; ok {
			ret = r
			return true
		}
		if e, ok := m["error"]; ok {
			qerr = &qmpError{}
			_ = json.Unmarshal(e, qerr)
			return true
		}
		return false // an event
	})
	if err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, err)
	}
	if qerr != nil {
		return fmt.Errorf("%w: QMP %s: %s: %s", ErrRejected, cmd, qerr.Class, qerr.Desc)
	}
	if out != nil {
		if err := json.Unmarshal(ret, out); err != nil {
			return fmt.Errorf("%w: QMP %s answer: %v", ErrMalformed, cmd, err)
		}
	}
	return nil
}

// run opens a session, runs f and closes it.
func (q *qemu) run(ctx context.Context, f func(*qmpConn) error) error {
	c, err := q.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

func (c *qmpConn) status() (string, error) {
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.exec("query-status", nil, &st); err != nil {
		return "", err
	}
	if st.Status == "" {
		return "", fmt.Errorf("%w: query-status without a status", ErrMalformed)
	}
	return st.Status, nil
}

// qemuState maps a QMP RunState.
func qemuState(runState string) State {
	switch runState {
	case "running", "suspended", "debug", "inmigrate", "postmigrate", "finish-migrate", "save-vm", "restore-vm":
		return StateOn
	case "prelaunch", "paused", "shutdown":
		return StateOff
	}
	return StateUnknown // guest-panicked, internal-error, io-error, watchdog, colo
}

// needsReset: QEMU refuses cont in these states until system_reset.
func needsReset(runState string) bool {
	return runState == "shutdown" || runState == "internal-error" || runState == "guest-panicked"
}

// state reads the run state; "" with a nil error means no VM and a launcher,
// that is, off.
func (q *qemu) state(ctx context.Context) (string, error) {
	var s string
	err := q.run(ctx, func(c *qmpConn) (err error) {
		s, err = c.status()
		return err
	})
	if errors.Is(err, errNoVM) && len(q.opts.QEMULauncher) > 0 {
		return "", nil
	}
	return s, err
}

func (q *qemu) Status(ctx context.Context) (State, error) {
	s, err := q.state(ctx)
	if err != nil {
		return StateUnknown, q.wrap("status", err)
	}
	if s == "" {
		return StateOff, nil
	}
	return qemuState(s), nil
}

// waitState polls query-status until ok accepts the run state ("" when QEMU
// is gone), for at most StateTimeout.
func (q *qemu) waitState(ctx context.Context, what string, ok func(string) bool) error {
	wctx, cancel := context.WithTimeout(ctx, q.opts.StateTimeout)
	defer cancel()
	last := ""
	for {
		var s string
		err := q.run(wctx, func(c *qmpConn) (err error) {
			s, err = c.status()
			return err
		})
		switch {
		case errors.Is(err, errNoVM):
			s, err = "", nil
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil && wctx.Err() == nil && !errors.Is(err, ErrUnreachable):
			return err
		}
		if err == nil {
			if last = s; ok(s) {
				return nil
			}
		}
		if err := sleepCtx(wctx, q.opts.PollInterval); err != nil || wctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if last == "" {
				last = "no QEMU"
			}
			return fmt.Errorf("%w: %s: run state still %q after %s", ErrStateTimeout, what, last, q.opts.StateTimeout)
		}
	}
}

func (q *qemu) PowerOn(ctx context.Context) error { return q.wrap("power on", q.powerOn(ctx)) }

func (q *qemu) powerOn(ctx context.Context) error {
	s, err := q.state(ctx)
	if err != nil {
		return err
	}
	if s == "" {
		if err := q.launch(ctx); err != nil {
			return err
		}
		if err := q.waitState(ctx, "launch", func(s string) bool { return s != "" }); err != nil {
			return err
		}
		if s, err = q.state(ctx); err != nil {
			return err
		}
	}
	if qemuState(s) == StateOn {
		return nil
	}
	err = q.run(ctx, func(c *qmpConn) error {
		if s != "prelaunch" {
			// A fresh boot, as from a real power button. From "shutdown" QEMU
			// requires it before cont.
			return c.exec("system_reset", nil, nil)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// system_reset is carried out by QEMU's main loop, after the answer.
	if err := q.waitState(ctx, "system_reset", func(s string) bool { return !needsReset(s) }); err != nil {
		return err
	}
	if err := q.run(ctx, func(c *qmpConn) error { return c.exec("cont", nil, nil) }); err != nil {
		return err
	}
	return q.waitState(ctx, "cont", func(s string) bool { return qemuState(s) == StateOn })
}

// launch runs the launcher command for a VM whose socket is absent.
func (q *qemu) launch(ctx context.Context) error {
	if len(q.opts.QEMULauncher) == 0 {
		return fmt.Errorf("%w: %w and no launcher is configured", ErrUnreachable, errNoVM)
	}
	lctx, cancel := context.WithTimeout(ctx, q.opts.StateTimeout)
	defer cancel()
	cmd := exec.CommandContext(lctx, q.opts.QEMULauncher[0], q.opts.QEMULauncher[1:]...)
	cmd.Env = append(cmd.Environ(), "KILN_QMP_SOCKET="+q.socket, "KILN_BOOT_DEVICE="+string(q.pendingBoot))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("launcher %s: %v: %s", q.opts.QEMULauncher[0], err, clip(out.String(), 300))
	}
	q.pendingBoot = ""
	return nil
}

// PowerOff quits QEMU when a launcher can start it again; otherwise it stops the
// VM and resets it, leaving it halted at the reset vector ("prelaunch").
func (q *qemu) PowerOff(ctx context.Context) error { return q.wrap("power off", q.powerOff(ctx)) }

func (q *qemu) powerOff(ctx context.Context) error {
	s, err := q.state(ctx)
	if err != nil {
		return err
	}
	if s == "" || s == "prelaunch" {
		return nil
	}
	if len(q.opts.QEMULauncher) > 0 {
		err := q.run(ctx, func(c *qmpConn) error { return c.exec("quit", nil, nil) })
		// QEMU may exit before its answer is read; the wait below tells.
		if err != nil && !errors.Is(err, ErrUnreachable) {
			return err
		}
		return q.waitState(ctx, "quit", func(s string) bool { return s == "" })
	}
	err = q.run(ctx, func(c *qmpConn) error {
		if err := c.exec("stop", nil, nil); err != nil {
			return err
		}
		return c.exec("system_reset", nil, nil)
	})
	if err != nil {
		return err
	}
	return q.waitState(ctx, "stop and system_reset", func(s string) bool { return s == "prelaunch" })
}

func (q *qemu) PowerCycle(ctx context.Context) error {
	err := func() error {
		s, err := q.state(ctx)
		if err != nil {
			return err
		}
		if qemuState(s) != StateOn {
			return q.powerOn(ctx)
		}
		return q.run(ctx, func(c *qmpConn) error { return c.exec("system_reset", nil, nil) })
	}()
	return q.wrap("power cycle", err)
}

// SoftOff is system_powerdown, an ACPI power-button press; the guest must handle it.
func (q *qemu) SoftOff(ctx context.Context) error {
	err := func() error {
		s, err := q.state(ctx)
		if err != nil {
			return err
		}
		if s == "" || qemuState(s) != StateOn {
			return nil
		}
		if err := q.run(ctx, func(c *qmpConn) error { return c.exec("system_powerdown", nil, nil) }); err != nil {
			return err
		}
		return q.waitState(ctx, "system_powerdown (does the guest handle ACPI?)", func(s string) bool { return qemuState(s) != StateOn })
	}()
	return q.wrap("soft off", err)
}

var qemuBootDevices = map[Device]string{DevicePXE: "n", DeviceDisk: "c", DeviceCDROM: "d"}

// SetNextBoot: see New.
func (q *qemu) SetNextBoot(ctx context.Context, d Device) error {
	err := func() error {
		order, ok := qemuBootDevices[d]
		if !ok {
			return fmt.Errorf("%w: boot device %q", ErrConfig, d)
		}
		var reply string
		err := q.run(ctx, func(c *qmpConn) error {
			return c.exec("human-monitor-command", map[string]string{"command-line": "boot_set " + order}, &reply)
		})
		if errors.Is(err, errNoVM) && len(q.opts.QEMULauncher) > 0 {
			q.pendingBoot = d
			return nil
		}
		if err != nil {
			return err
		}
		if !strings.HasPrefix(reply, "boot device list now set to") {
			return fmt.Errorf("%w: boot_set %s: %s", ErrUnsupported, order, clip(reply, 200))
		}
		return nil
	}()
	return q.wrap("set next boot "+string(d), err)
}

func (q *qemu) Close(context.Context) error { return nil }
