package power

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// State is a machine's power state as its BMC reports it.
type State string

// Power states.
const (
	StateOn          State = "on"
	StateOff         State = "off"
	StatePoweringOn  State = "powering-on"
	StatePoweringOff State = "powering-off"
	StateUnknown     State = "unknown"
)

// Device is a boot device for [Driver.SetNextBoot].
type Device string

// Boot devices.
const (
	DevicePXE   Device = "pxe"
	DeviceDisk  Device = "disk"
	DeviceCDROM Device = "cdrom"
)

// ParseDevice checks a boot device name.
func ParseDevice(s string) (Device, error) {
	switch d := Device(strings.ToLower(s)); d {
	case DevicePXE, DeviceDisk, DeviceCDROM:
		return d, nil
	}
	return "", fmt.Errorf("boot device %q: not one of pxe, disk, cdrom", s)
}

// Driver controls one machine's power through its BMC. Every method returns once
// the BMC reports the requested state (or the change is made, for SetNextBoot),
// and fails when it does not within [Options.StateTimeout] or ctx. Drivers are not
// safe for concurrent use: [Runner] serializes the requests to one BMC.
type Driver interface {
	PowerOn(ctx context.Context) error
	// PowerOff is a hard power off.
	PowerOff(ctx context.Context) error
	// PowerCycle powers the machine off and on again, or on when it is off.
	PowerCycle(ctx context.Context) error
	// SoftOff asks the operating system to shut down (ACPI power button) and
	// waits until the machine is off.
	SoftOff(ctx context.Context) error
	Status(ctx context.Context) (State, error)
	// SetNextBoot makes the machine boot from d on its next boot only.
	SetNextBoot(ctx context.Context, d Device) error
	// Close releases what the driver holds on the BMC (a Redfish session). It is
	// safe to call more than once.
	Close(ctx context.Context) error
}

// VirtualMedia is implemented by drivers whose BMC can attach an ISO image by URL as
// a virtual CD (Redfish, where the BMC offers it). The BMC fetches the image itself.
type VirtualMedia interface {
	InsertMedia(ctx context.Context, imageURL string) error
	EjectMedia(ctx context.Context) error
}

// Credentials resolves the Secret named by spec.bmc.credentialsSecret into a BMC
// user name and password. Implementations must not put the password in errors.
type Credentials interface {
	BMCCredentials(ctx context.Context, secretName string) (user, password string, err error)
}

// Errors that classify driver failures; test with errors.Is.
var (
	// ErrConfig: spec.bmc cannot work as written (bad address, missing secret).
	ErrConfig = errors.New("invalid BMC configuration")
	// ErrUnsupported: the BMC does not offer what was asked (no Pxe target, no
	// VirtualMedia, no GracefulShutdown).
	ErrUnsupported = errors.New("not supported by the BMC")
	// ErrUnreachable: no answer, a refused connection or a timeout.
	ErrUnreachable = errors.New("BMC unreachable")
	// ErrAuth: the BMC refused the credentials.
	ErrAuth = errors.New("BMC refused the credentials")
	// ErrTLS: the BMC's certificate is not the pinned one or does not verify.
	ErrTLS = errors.New("BMC certificate not trusted")
	// ErrMalformed: the BMC answered something that cannot be understood.
	ErrMalformed = errors.New("malformed BMC response")
	// ErrStateTimeout: the BMC accepted the request but never reported the
	// requested power state.
	ErrStateTimeout = errors.New("BMC did not reach the requested power state")
	// ErrRejected: the BMC answered the request with an error.
	ErrRejected = errors.New("BMC rejected the request")
)

// Retryable reports whether a failed request may succeed when tried again:
// everything but a configuration error or a capability the BMC lacks.
func Retryable(err error) bool {
	return err != nil && !errors.Is(err, ErrConfig) && !errors.Is(err, ErrUnsupported)
}

// Options tune the drivers. The zero value is usable; see the field defaults.
type Options struct {
	// RequestTimeout bounds one HTTP request, one ipmitool run or one QMP
	// exchange. Default 20s.
	RequestTimeout time.Duration
	// PollInterval is the pause between power-state reads while waiting for a
	// state. Default 2s.
	PollInterval time.Duration
	// StateTimeout bounds the wait for the requested power state after a
	// request was accepted. Default 3m.
	StateTimeout time.Duration
	// MaxResponseBytes limits a Redfish response body. Default 4 MiB.
	MaxResponseBytes int64

	// RootCAs verifies Redfish certificates when spec.bmc.caFingerprint is not
	// set; nil means the system roots.
	RootCAs *x509.CertPool
	// AllowHTTP permits http:// Redfish addresses (emulators in a lab). Off by
	// default: credentials never travel in the clear unless asked.
	AllowHTTP bool

	// IPMITool is the ipmitool binary. Default "ipmitool".
	IPMITool string
	// IPMICipherSuite is passed as ipmitool -C when not empty (for example "3" or
	// "17"). Empty lets ipmitool pick, which first asks the BMC for its cipher
	// suites, a request some BMCs (and OpenIPMI's ipmi_sim) do not answer.
	IPMICipherSuite string
	// IPMIEFIBoot adds options=efiboot to chassis bootdev, for UEFI machines.
	IPMIEFIBoot bool

	// QEMULauncher, when set, is run (argv, no shell) to start a lab VM whose
	// QMP socket is absent. It gets KILN_QMP_SOCKET and KILN_BOOT_DEVICE in its
	// environment and must return once QEMU is started (qemu -daemonize). With a
	// launcher, PowerOff quits QEMU and an absent socket means "off".
	QEMULauncher []string

	// Logger receives debug lines (requests, never secrets). Default: discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 20 * time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.StateTimeout <= 0 {
		o.StateTimeout = 3 * time.Minute
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = 4 << 20
	}
	if o.IPMITool == "" {
		o.IPMITool = "ipmitool"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// New returns the driver for bmc.Driver ("redfish", "ipmi" or "qemu"). It resolves
// the credentials Secret but does not contact the BMC; the first call does.
//
// The qemu driver maps power onto QMP (see NETBOOT-LAB.md for how lab VMs run):
//
//   - Status: query-status "running" (and "suspended") is on; "prelaunch",
//     "paused" and "shutdown" (a guest that powered off under -no-shutdown) are
//     off. An absent socket is off when a launcher is configured, else unreachable.
//   - PowerOn: from off, system_reset (a fresh boot; "shutdown" requires it) then
//     cont. With an absent socket, the launcher is run.
//   - PowerOff: with a launcher, quit; otherwise stop + system_reset, which
//     leaves the VM halted at its reset vector ("prelaunch") until PowerOn.
//   - PowerCycle: system_reset when running, PowerOn when off.
//   - SoftOff: system_powerdown (ACPI), then wait until the guest is off.
//   - SetNextBoot: the HMP boot_set command (the BIOS boot order in CMOS, which
//     SeaBIOS honours when no device has a bootindex). QMP has no one-shot form:
//     the order stays until set again, which is harmless because Kiln's boot
//     script boots the local disk once a machine is provisioned. With a launcher
//     and no running VM, the device is passed to the next launch instead
//     (KILN_BOOT_DEVICE, for qemu -boot once=...). Machines whose boot order
//     cannot be changed (-machine none) return ErrUnsupported.
func New(ctx context.Context, bmc resource.BMC, creds Credentials, opts Options) (Driver, error) {
	opts = opts.withDefaults()
	switch bmc.Driver {
	case "redfish":
		user, password, err := resolveCredentials(ctx, bmc, creds)
		if err != nil {
			return nil, err
		}
		return newRedfish(bmc, user, password, opts)
	case "ipmi":
		user, password, err := resolveCredentials(ctx, bmc, creds)
		if err != nil {
			return nil, err
		}
		return newIPMI(bmc, user, password, opts)
	case "qemu":
		return newQEMU(bmc, opts)
	case "":
		return nil, fmt.Errorf("%w: spec.bmc.driver: required (ipmi, redfish or qemu)", ErrConfig)
	}
	return nil, fmt.Errorf("%w: spec.bmc.driver: %q is not one of ipmi, redfish, qemu", ErrConfig, bmc.Driver)
}

func resolveCredentials(ctx context.Context, bmc resource.BMC, creds Credentials) (string, string, error) {
	if bmc.CredentialsSecret == "" {
		return "", "", fmt.Errorf("%w: spec.bmc.credentialsSecret: required for the %s driver", ErrConfig, bmc.Driver)
	}
	if creds == nil {
		return "", "", fmt.Errorf("%w: no credentials resolver configured", ErrConfig)
	}
	user, password, err := cachedCredentials(ctx, creds, bmc.CredentialsSecret)
	if err != nil {
		return "", "", fmt.Errorf("resolve BMC credentials secret %q: %w", bmc.CredentialsSecret, err)
	}
	return user, password, nil
}

// ---- redaction ---------------------------------------------------------------------

// redact returns err with every occurrence of secret in its text replaced by "***".
// The result still matches this package's error kinds and the context errors with
// errors.Is, but no longer unwraps to the original chain, whose text holds the secret.
func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	r := &redactedError{msg: strings.ReplaceAll(err.Error(), secret, "***")}
	for _, k := range []error{ErrConfig, ErrUnsupported, ErrUnreachable, ErrAuth, ErrTLS, ErrMalformed,
		ErrStateTimeout, ErrRejected, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, k) {
			r.kinds = append(r.kinds, k)
		}
	}
	return r
}

type redactedError struct {
	msg   string
	kinds []error
}

func (e *redactedError) Error() string { return e.msg }

func (e *redactedError) Is(target error) bool { return slices.Contains(e.kinds, target) }

// clip shortens text quoted from a BMC in an error.
func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitForState polls read every poll until it reports want, for at most limit.
// read returns the state and how the BMC words it (for the timeout message); an
// unreachable BMC is polled again (the last such error goes into the message),
// any other error ends the wait. what names the reading in the message
// ("chassis power", "PowerState").
func waitForState(ctx context.Context, poll, limit time.Duration, want State, wantText, what, after string,
	read func(ctx context.Context) (State, string, error)) error {
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	last, lastErr := string(StateUnknown), error(nil)
	for {
		s, text, err := read(wctx)
		switch {
		case err == nil:
			if last = text; s == want {
				return nil
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case wctx.Err() != nil: // the deadline cut this read short
		case !errors.Is(err, ErrUnreachable):
			return err
		default:
			lastErr = err
		}
		if err := sleepCtx(wctx, poll); err != nil || wctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			msg := fmt.Sprintf("after %s, %s is still %s after %s (wanted %s)", after, what, last, limit, wantText)
			if lastErr != nil {
				msg += "; last error: " + lastErr.Error()
			}
			return fmt.Errorf("%w: %s", ErrStateTimeout, msg)
		}
	}
}
