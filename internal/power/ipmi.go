package power

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// The ipmi driver runs ipmitool (Debian's package) with the IPMI v2.0 RMCP+
// interface, "lanplus". The password is handed over in the child's environment
// (ipmitool -E reads IPMI_PASSWORD), so it never shows in /proc/<pid>/cmdline or
// ps; the user name is not a secret and goes on the command line.

type ipmi struct {
	addr     string // host:port, for messages
	host     string
	port     string
	user     string
	password string
	opts     Options
	bootMode string // resource.BMC.BootMode
}

func newIPMI(bmc resource.BMC, user, password string, opts Options) (*ipmi, error) {
	host, port, err := parseIPMIAddress(bmc.Address)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(user, "\x00\n") {
		return nil, fmt.Errorf("%w: BMC user name contains a control character", ErrConfig)
	}
	return &ipmi{addr: net.JoinHostPort(host, port), host: host, port: port, user: user, password: password, opts: opts, bootMode: bmc.BootMode}, nil
}

// parseIPMIAddress accepts host, host:port, [v6]:port and ipmi://host[:port]
// (lanplus:// too); the port defaults to 623 (RMCP).
func parseIPMIAddress(addr string) (string, string, error) {
	s := strings.TrimSpace(addr)
	for _, p := range []string{"ipmi://", "lanplus://"} {
		s = strings.TrimPrefix(s, p)
	}
	s = strings.TrimSuffix(s, "/")
	if s == "" || strings.ContainsAny(s, "@/ \t") || strings.HasPrefix(s, "-") {
		return "", "", fmt.Errorf("%w: spec.bmc.address: not a host[:port]", ErrConfig)
	}
	host, port := s, "623"
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.Count(s, ":") > 1 { // bare IPv6
		host = strings.Trim(s, "[]")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("%w: spec.bmc.address: port %q is not a number from 1 to 65535", ErrConfig, port)
	}
	if host == "" || strings.HasPrefix(host, "-") {
		return "", "", fmt.Errorf("%w: spec.bmc.address: no host", ErrConfig)
	}
	return host, port, nil
}

func (d *ipmi) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return redact(fmt.Errorf("ipmi %s: %s: %w", d.addr, op, err), d.password)
}

// run executes one ipmitool command with RequestTimeout.
func (d *ipmi) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.RequestTimeout)
	defer cancel()
	// -v makes ipmitool say why a session failed (RAKP errors for bad
	// credentials, no answer to Get Channel Authentication Capabilities for an
	// unreachable BMC); -N/-R bound its own retransmissions.
	argv := []string{"-v", "-I", "lanplus", "-H", d.host, "-p", d.port, "-U", d.user, "-E", "-N", "2", "-R", "2"}
	if d.opts.IPMICipherSuite != "" {
		argv = append(argv, "-C", d.opts.IPMICipherSuite)
	}
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, d.opts.IPMITool, argv...)
	cmd.Env = []string{"IPMI_PASSWORD=" + d.password, "LC_ALL=C"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	d.opts.Logger.Debug("ipmitool", "bmc", d.addr, "args", strings.Join(args, " "), "duration", time.Since(start), "ok", err == nil)
	if err == nil {
		return stdout.String(), nil
	}
	what := "ipmitool " + strings.Join(args, " ")
	switch {
	case cmd.ProcessState == nil && ctx.Err() == nil: // never started: no ipmitool, not executable
		return "", fmt.Errorf("%w: %s: %v", ErrConfig, what, err)
	case ctx.Err() == context.DeadlineExceeded:
		return "", fmt.Errorf("%w: %s: no answer within %s", ErrUnreachable, what, d.opts.RequestTimeout)
	case ctx.Err() != nil:
		return "", ctx.Err()
	}
	return "", ipmitoolError(what, stderr.String()+stdout.String(), err)
}

// ipmitoolError classifies a failed run from ipmitool's (verbose) output.
func ipmitoolError(what, out string, err error) error {
	msg := lastLines(out, 3)
	switch {
	case strings.Contains(out, "RAKP 2 HMAC is invalid"),
		strings.Contains(out, "unauthorized name"),
		strings.Contains(out, "invalid authentication code"),
		strings.Contains(out, "Insufficient privilege level"),
		strings.Contains(out, "privilege level to ADMINISTRATOR failed"):
		return fmt.Errorf("%w: %s: %s", ErrAuth, what, msg)
	case strings.Contains(out, "Get Auth Capabilities error"),
		strings.Contains(out, "Get Channel Authentication Capabilities"),
		strings.Contains(out, "Unable to establish IPMI v2 / RMCP+ session"),
		strings.Contains(out, "No response from remote controller"),
		strings.Contains(out, "Address lookup for"):
		return fmt.Errorf("%w: %s: %s", ErrUnreachable, what, msg)
	}
	if msg == "" {
		msg = err.Error()
	}
	return fmt.Errorf("%w: %s: %s", ErrRejected, what, msg)
}

// lastLines keeps the last n non-empty lines of ipmitool output that are not
// verbose chatter.
func lastLines(s string, n int) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "Loading IANA PEN Registry") || strings.HasPrefix(l, "Running Get") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return clip(strings.Join(keep, "; "), 300)
}

var ipmiPowerRE = regexp.MustCompile(`Chassis Power is (on|off)`)

// parseIPMIStatus reads `chassis power status` output.
func parseIPMIStatus(out string) (State, error) {
	m := ipmiPowerRE.FindStringSubmatch(out)
	if m == nil {
		return StateUnknown, fmt.Errorf("%w: chassis power status: %q", ErrMalformed, clip(out, 100))
	}
	if m[1] == "on" {
		return StateOn, nil
	}
	return StateOff, nil
}

func (d *ipmi) status(ctx context.Context) (State, error) {
	out, err := d.run(ctx, "chassis", "power", "status")
	if err != nil {
		return StateUnknown, err
	}
	return parseIPMIStatus(out)
}

func (d *ipmi) Status(ctx context.Context) (State, error) {
	s, err := d.status(ctx)
	return s, d.wrap("status", err)
}

// waitFor polls chassis power status until want, for at most StateTimeout;
// transient session failures are tolerated until then.
func (d *ipmi) waitFor(ctx context.Context, want State, after string) error {
	return waitForState(ctx, d.opts.PollInterval, d.opts.StateTimeout, want, string(want), "chassis power", after,
		func(ctx context.Context) (State, string, error) {
			s, err := d.status(ctx)
			return s, string(s), err
		})
}

func (d *ipmi) change(ctx context.Context, skipIf, want State, verb string) error {
	s, err := d.status(ctx)
	if err != nil {
		return err
	}
	if s == skipIf {
		return nil
	}
	if _, err := d.run(ctx, "chassis", "power", verb); err != nil {
		return err
	}
	return d.waitFor(ctx, want, "chassis power "+verb)
}

func (d *ipmi) PowerOn(ctx context.Context) error {
	return d.wrap("power on", d.change(ctx, StateOn, StateOn, "on"))
}

func (d *ipmi) PowerOff(ctx context.Context) error {
	return d.wrap("power off", d.change(ctx, StateOff, StateOff, "off"))
}

// SoftOff is chassis power soft: an ACPI power-button press for the OS.
func (d *ipmi) SoftOff(ctx context.Context) error {
	return d.wrap("soft off", d.change(ctx, StateOff, StateOff, "soft"))
}

// PowerCycle is chassis power cycle when on (IPMI 2.0 section 28.3: the BMC
// holds power off for at least a second) and power on when off, since many BMCs
// ignore or refuse a cycle of a machine that is off.
func (d *ipmi) PowerCycle(ctx context.Context) error {
	err := func() error {
		s, err := d.status(ctx)
		if err != nil {
			return err
		}
		verb := "cycle"
		if s == StateOff {
			verb = "on"
		}
		if _, err := d.run(ctx, "chassis", "power", verb); err != nil {
			return err
		}
		return d.waitFor(ctx, StateOn, "chassis power "+verb)
	}()
	return d.wrap("power cycle", err)
}

var ipmiBootDevices = map[Device]string{DevicePXE: "pxe", DeviceDisk: "disk", DeviceCDROM: "cdrom"}

// SetNextBoot is chassis bootdev, which without options=persistent applies to
// the next boot only (IPMI 2.0 section 28.13, boot flags parameter 5).
func (d *ipmi) SetNextBoot(ctx context.Context, dev Device) error {
	name, ok := ipmiBootDevices[dev]
	if !ok {
		return d.wrap("set next boot", fmt.Errorf("%w: boot device %q", ErrConfig, dev))
	}
	args := []string{"chassis", "bootdev", name}
	if d.opts.IPMIEFIBoot || d.bootMode == "uefi" {
		args = append(args, "options=efiboot")
	}
	_, err := d.run(ctx, args...)
	return d.wrap("set next boot "+string(dev), err)
}

func (d *ipmi) Close(context.Context) error { return nil }
