package power

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// vendors are the mockups under testdata/redfish, with what each one offers.
var vendors = []struct {
	fixture      string
	initial      State
	powerCycle   bool // lists ResetType PowerCycle
	ifMatch      bool // the simulator requires If-Match (iLO answers 428/412)
	mediaSlot    string
	mediaPatched bool // VirtualMedia without actions, changed by PATCH
}{
	{"dmtf-public-rackmount1", StateOn, false, false, "/redfish/v1/Systems/437XR1138R2/VirtualMedia/CD1", true},
	{"hpe-ilo5-dl325-gen10plus", StateOn, false, true, "/redfish/v1/Managers/1/VirtualMedia/2", false},
	{"gigabyte-ami-h262-z63", StateOn, false, false, "/redfish/v1/Managers/Self/VirtualMedia/CD1", false},
	{"openbmc-stock", StateOff, true, false, "", false},
}

func newTestRedfish(t *testing.T, sim *bmcSim, log *logBuffer, mutate ...func(*resource.BMC, *Options)) Driver {
	t.Helper()
	bmc, opts := redfishBMC(sim), fastOptions(log)
	for _, m := range mutate {
		m(&bmc, &opts)
	}
	d, err := New(context.Background(), bmc, staticCreds{testUser, testPassword}, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func TestRedfishVendors(t *testing.T) {
	for _, v := range vendors {
		t.Run(v.fixture, func(t *testing.T) {
			ctx := context.Background()
			sim := newBMCSim(t, simConfig{fixture: v.fixture, requireIfMatch: v.ifMatch, transition: 30 * time.Millisecond})
			log := &logBuffer{}
			d := newTestRedfish(t, sim, log)
			var errs []string
			check := func(what string, err error) {
				t.Helper()
				errs = append(errs, errText(err))
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			}

			st, err := d.Status(ctx)
			check("status", err)
			if st != v.initial {
				t.Fatalf("status = %s, want the mockup's %s", st, v.initial)
			}

			check("power on", d.PowerOn(ctx))
			check("power off", d.PowerOff(ctx))
			if got := sim.PowerState(); got != "Off" {
				t.Fatalf("after PowerOff the BMC reports %q", got)
			}
			check("power on", d.PowerOn(ctx))
			if got := sim.PowerState(); got != "On" {
				t.Fatalf("after PowerOn the BMC reports %q", got)
			}

			sim.ClearResets()
			check("power cycle", d.PowerCycle(ctx))
			want := []string{"ForceOff", "On"}
			if v.powerCycle {
				want = []string{"PowerCycle"}
			}
			if got := sim.Resets(); !slices.Equal(got, want) {
				t.Fatalf("power cycle sent ResetTypes %v, want %v", got, want)
			}
			if got := sim.PowerState(); got != "On" {
				t.Fatalf("after PowerCycle the BMC reports %q", got)
			}

			sim.ClearResets()
			check("soft off", d.SoftOff(ctx))
			if got := sim.Resets(); !slices.Equal(got, []string{"GracefulShutdown"}) {
				t.Fatalf("soft off sent %v", got)
			}
			sim.ClearResets()
			check("power cycle when off", d.PowerCycle(ctx))
			if got := sim.Resets(); !slices.Equal(got, []string{"On"}) {
				t.Fatalf("cycling an off machine sent %v, want [On]", got)
			}
			sim.ClearResets()
			check("power on when on", d.PowerOn(ctx))
			if got := sim.Resets(); len(got) != 0 {
				t.Fatalf("powering on a machine that is on sent %v", got)
			}

			check("next boot disk", d.SetNextBoot(ctx, DeviceDisk))
			if tg, en := sim.Boot(); tg != "Hdd" || en != "Once" {
				t.Fatalf("boot override = %s/%s, want Hdd/Once", tg, en)
			}
			check("next boot pxe", d.SetNextBoot(ctx, DevicePXE))
			if tg, en := sim.Boot(); tg != "Pxe" || en != "Once" {
				t.Fatalf("boot override = %s/%s, want Pxe/Once", tg, en)
			}

			check("close", d.Close(ctx))
			created, open, deleted := sim.Sessions()
			if created != 1 || open != 0 || len(deleted) != 1 {
				t.Fatalf("sessions: created %d, still open %d, deleted %v; want one session, deleted on Close", created, open, deleted)
			}
			assertNoSecret(t, "errors", errs...)
			assertNoSecret(t, "log", log.String())
		})
	}
}

func TestRedfishVirtualMedia(t *testing.T) {
	const iso = "http://10.0.0.1:8080/artifacts/agent.iso"
	for _, v := range vendors {
		t.Run(v.fixture, func(t *testing.T) {
			ctx := context.Background()
			sim := newBMCSim(t, simConfig{fixture: v.fixture, requireIfMatch: v.ifMatch})
			d := newTestRedfish(t, sim, &logBuffer{})
			defer d.Close(ctx)
			vm, ok := d.(VirtualMedia)
			if !ok {
				t.Fatal("the redfish driver does not implement VirtualMedia")
			}
			err := vm.InsertMedia(ctx, iso)
			if v.mediaSlot == "" {
				if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "VirtualMedia") {
					t.Fatalf("InsertMedia on a BMC without VirtualMedia: %v, want ErrUnsupported", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("InsertMedia: %v", err)
			}
			if img, ins := sim.MediaSlot(v.mediaSlot); img != iso || !ins {
				t.Fatalf("slot %s: image %q inserted %v", v.mediaSlot, img, ins)
			}
			if err := vm.InsertMedia(ctx, iso); err != nil {
				t.Fatalf("InsertMedia again (no-op): %v", err)
			}
			if err := vm.EjectMedia(ctx); err != nil {
				t.Fatalf("EjectMedia: %v", err)
			}
			if _, ins := sim.MediaSlot(v.mediaSlot); ins {
				t.Fatal("still inserted after EjectMedia")
			}
			if err := vm.InsertMedia(ctx, "ftp://example/x.iso"); !errors.Is(err, ErrConfig) {
				t.Fatalf("InsertMedia(ftp://): %v, want ErrConfig", err)
			}
		})
	}
}

func TestRedfishNoPxe(t *testing.T) {
	for _, v := range vendors {
		t.Run(v.fixture, func(t *testing.T) {
			sim := newBMCSim(t, simConfig{fixture: v.fixture, dropBootTarget: "Pxe"})
			d := newTestRedfish(t, sim, &logBuffer{})
			defer d.Close(context.Background())
			err := d.SetNextBoot(context.Background(), DevicePXE)
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("SetNextBoot(pxe) = %v, want ErrUnsupported", err)
			}
			for _, s := range []string{"Pxe is not offered", "AllowableValues", "Hdd"} {
				if !strings.Contains(err.Error(), s) {
					t.Fatalf("error %q does not mention %q", err, s)
				}
			}
			if Retryable(err) {
				t.Fatal("a missing capability must not be retried")
			}
		})
	}
}

func TestRedfishResetTypes(t *testing.T) {
	ctx := context.Background()
	t.Run("not allowed", func(t *testing.T) {
		sim := newBMCSim(t, simConfig{fixture: "hpe-ilo5-dl325-gen10plus", dropResetType: "GracefulShutdown"})
		d := newTestRedfish(t, sim, &logBuffer{})
		defer d.Close(ctx)
		err := d.SoftOff(ctx)
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "ResetType GracefulShutdown is not allowed") ||
			!strings.Contains(err.Error(), "ForceOff") {
			t.Fatalf("SoftOff = %v, want ErrUnsupported naming the allowable values", err)
		}
		if got := sim.Resets(); len(got) != 0 {
			t.Fatalf("sent %v anyway", got)
		}
	})
	t.Run("ActionInfo missing", func(t *testing.T) {
		// The standard set is assumed, without PowerCycle.
		sim := newBMCSim(t, simConfig{fixture: "openbmc-stock", noActionInfo: true, powerState: "On"})
		d := newTestRedfish(t, sim, &logBuffer{})
		defer d.Close(ctx)
		if err := d.PowerCycle(ctx); err != nil {
			t.Fatal(err)
		}
		if got := sim.Resets(); !slices.Equal(got, []string{"ForceOff", "On"}) {
			t.Fatalf("resets %v, want ForceOff and On", got)
		}
	})
}

func TestRedfishBasicAuthOnly(t *testing.T) {
	sim := newBMCSim(t, simConfig{fixture: "gigabyte-ami-h262-z63", noSessions: true})
	log := &logBuffer{}
	d := newTestRedfish(t, sim, log)
	if err := d.PowerOff(context.Background()); err != nil {
		t.Fatalf("PowerOff with basic auth: %v", err)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if created, _, _ := sim.Sessions(); created != 0 || sim.basicUsed == 0 {
		t.Fatalf("sessions created %d, basic-auth requests %d: want basic auth only", created, sim.basicUsed)
	}
	assertNoSecret(t, "log", log.String())
}

func TestRedfishSessionExpiry(t *testing.T) {
	sim := newBMCSim(t, simConfig{fixture: "openbmc-stock"})
	d := newTestRedfish(t, sim, &logBuffer{})
	ctx := context.Background()
	defer d.Close(ctx)
	if _, err := d.Status(ctx); err != nil {
		t.Fatal(err)
	}
	sim.ExpireSessions()
	if _, err := d.Status(ctx); err != nil {
		t.Fatalf("Status after the session expired: %v", err)
	}
	if created, _, _ := sim.Sessions(); created != 2 {
		t.Fatalf("sessions created = %d, want a new login after expiry", created)
	}
}

func TestRedfishIfMatch(t *testing.T) {
	// iLO answers 412 to a stale ETag: the driver re-reads it and tries again.
	sim := newBMCSim(t, simConfig{fixture: "hpe-ilo5-dl325-gen10plus", requireIfMatch: true, staleOnce: true})
	d := newTestRedfish(t, sim, &logBuffer{})
	defer d.Close(context.Background())
	if err := d.SetNextBoot(context.Background(), DevicePXE); err != nil {
		t.Fatalf("SetNextBoot after a 412: %v", err)
	}
	if tg, en := sim.Boot(); tg != "Pxe" || en != "Once" {
		t.Fatalf("boot override = %s/%s", tg, en)
	}
	if sim.patches != 2 {
		t.Fatalf("PATCH sent %d times, want 2 (412, then the fresh ETag)", sim.patches)
	}
}

// TestRedfishBadInput: each failure is a clear, classified error, in bounded time,
// without the password.
func TestRedfishBadInput(t *testing.T) {
	ctx := context.Background()
	otherFP := sha256.Sum256([]byte("another certificate"))

	// A listener that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// A port with nothing listening.
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	cases := []struct {
		name    string
		sim     simConfig
		mutate  func(*resource.BMC, *Options)
		creds   *staticCreds
		op      func(Driver) error
		want    error
		mention string
	}{
		{name: "wrong password", sim: simConfig{fixture: "dmtf-public-rackmount1"},
			creds: &staticCreds{testUser, "wrong-" + testPassword}, want: ErrAuth},
		{name: "wrong password basic auth", sim: simConfig{fixture: "openbmc-stock", noSessions: true},
			creds: &staticCreds{testUser, testPassword + "x"}, want: ErrAuth},
		{name: "pinned fingerprint mismatch", sim: simConfig{fixture: "hpe-ilo5-dl325-gen10plus"},
			mutate: func(b *resource.BMC, _ *Options) { b.CAFingerprint = hex.EncodeToString(otherFP[:]) },
			want:   ErrTLS, mention: "does not match spec.bmc.caFingerprint"},
		{name: "self-signed without pin", sim: simConfig{fixture: "gigabyte-ami-h262-z63"},
			mutate: func(b *resource.BMC, _ *Options) { b.CAFingerprint = "" }, want: ErrTLS},
		{name: "never reaches the state", sim: simConfig{fixture: "openbmc-stock", stuck: true},
			op: func(d Driver) error { return d.PowerOn(ctx) }, want: ErrStateTimeout, mention: `PowerState is still "Off"`},
		{name: "malformed ComputerSystem", sim: simConfig{fixture: "dmtf-public-rackmount1", malformed: true},
			want: ErrMalformed, mention: "ComputerSystem"},
		{name: "unreachable", sim: simConfig{fixture: "openbmc-stock"},
			mutate: func(b *resource.BMC, _ *Options) { b.Address = "https://" + closedAddr }, want: ErrUnreachable},
		{name: "silent", sim: simConfig{fixture: "openbmc-stock"},
			mutate: func(b *resource.BMC, o *Options) {
				b.Address = "https://" + silent.Addr().String()
				o.RequestTimeout = 300 * time.Millisecond
			}, want: ErrUnreachable},
		{name: "plain http refused", sim: simConfig{fixture: "openbmc-stock"},
			mutate: func(b *resource.BMC, _ *Options) { b.Address = "http://10.0.0.9" }, want: ErrConfig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sim := newBMCSim(t, c.sim)
			log := &logBuffer{}
			bmc, opts := redfishBMC(sim), fastOptions(log)
			opts.StateTimeout = 300 * time.Millisecond
			if c.mutate != nil {
				c.mutate(&bmc, &opts)
			}
			creds := staticCreds{testUser, testPassword}
			if c.creds != nil {
				creds = *c.creds
			}
			start := time.Now()
			d, err := New(ctx, bmc, creds, opts)
			if err == nil {
				op := c.op
				if op == nil {
					op = func(d Driver) error { _, err := d.Status(ctx); return err }
				}
				err = op(d)
				d.Close(ctx)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error = %v, want %v", err, c.want)
			}
			if c.mention != "" && !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("error %q does not say %q", err, c.mention)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("took %s: every call must be bounded", took)
			}
			assertNoSecret(t, "error", err.Error())
			if strings.Contains(err.Error(), "wrong-") || strings.Contains(log.String(), "wrong-") {
				t.Fatalf("the attempted password leaked: %v", err)
			}
			assertNoSecret(t, "log", log.String())
		})
	}
}

func TestRedfishCAPool(t *testing.T) {
	// Without a pin, a certificate is verified against Options.RootCAs, host name
	// included (httptest's certificate is for 127.0.0.1).
	sim := newBMCSim(t, simConfig{fixture: "openbmc-stock"})
	pool := x509.NewCertPool()
	pool.AddCert(sim.srv.Certificate())
	d := newTestRedfish(t, sim, &logBuffer{}, func(b *resource.BMC, o *Options) {
		b.CAFingerprint = ""
		o.RootCAs = pool
	})
	defer d.Close(context.Background())
	if st, err := d.Status(context.Background()); err != nil || st != StateOff {
		t.Fatalf("Status = %s, %v", st, err)
	}
}

func TestRedfishFingerprintFormats(t *testing.T) {
	sim := newBMCSim(t, simConfig{fixture: "openbmc-stock"})
	fp := strings.ToUpper(sim.Fingerprint())
	var colons []string
	for i := 0; i < len(fp); i += 2 {
		colons = append(colons, fp[i:i+2])
	}
	d := newTestRedfish(t, sim, &logBuffer{}, func(b *resource.BMC, _ *Options) { b.CAFingerprint = strings.Join(colons, ":") })
	defer d.Close(context.Background())
	if _, err := d.Status(context.Background()); err != nil {
		t.Fatalf("upper-case, colon-separated fingerprint: %v", err)
	}
}

func TestRedfishAddress(t *testing.T) {
	cases := []struct {
		in, base, system string
		allowHTTP        bool
		bad              bool
	}{
		{in: "https://10.0.0.5", base: "https://10.0.0.5"},
		{in: "10.0.0.5:8443", base: "https://10.0.0.5:8443"},
		{in: "https://bmc.example/redfish/v1/", base: "https://bmc.example"},
		{in: "https://bmc.example/redfish/v1/Systems/2", base: "https://bmc.example", system: "/redfish/v1/Systems/2"},
		{in: "https://[fd00::5]:443", base: "https://[fd00::5]:443"},
		{in: "http://127.0.0.1:8000", base: "http://127.0.0.1:8000", allowHTTP: true},
		{in: "http://127.0.0.1:8000", bad: true},
		{in: "https://admin:" + testPassword + "@10.0.0.5", bad: true},
		{in: "ftp://10.0.0.5", bad: true},
		{in: "https://10.0.0.5/other", bad: true},
		{in: "https://10.0.0.5/?x=1", bad: true},
		{in: "", bad: true},
	}
	for _, c := range cases {
		base, sys, err := parseRedfishAddress(c.in, c.allowHTTP)
		if c.bad {
			if !errors.Is(err, ErrConfig) {
				t.Errorf("%q: error %v, want ErrConfig", c.in, err)
			}
			assertNoSecret(t, "address error", errText(err))
			continue
		}
		if err != nil || base.String() != c.base || sys != c.system {
			t.Errorf("%q: %v %q %v, want %s %q", c.in, base, sys, err, c.base, c.system)
		}
	}
}

func TestNewConfigErrors(t *testing.T) {
	ctx := context.Background()
	cases := []resource.BMC{
		{Driver: "redfish", Address: "https://10.0.0.5"}, // no credentials secret
		{Driver: "ipmi", Address: "10.0.0.5"},
		{Driver: "snmp", Address: "10.0.0.5"},
		{Driver: "", Address: "10.0.0.5"},
		{Driver: "redfish", Address: "https://10.0.0.5", CredentialsSecret: "c", CAFingerprint: "abc"},
		{Driver: "ipmi", Address: "10.0.0.5:99999", CredentialsSecret: "c"},
		{Driver: "qemu", Address: "relative.qmp"},
	}
	for _, b := range cases {
		_, err := New(ctx, b, staticCreds{testUser, testPassword}, Options{})
		if !errors.Is(err, ErrConfig) || Retryable(err) {
			t.Errorf("%+v: %v, want a non-retryable ErrConfig", b, err)
		}
	}
}

func TestRedact(t *testing.T) {
	base := errors.Join(ErrAuth, errors.New("BMC said: bad password "+testPassword))
	err := redact(base, testPassword)
	assertNoSecret(t, "redacted error", err.Error())
	if !errors.Is(err, ErrAuth) || errors.Is(err, ErrTLS) {
		t.Fatalf("redaction lost or invented the error kind: %v", err)
	}
	if errors.Unwrap(err) != nil {
		t.Fatal("a redacted error must not unwrap to the original text")
	}
}

// TestRedfishBootMode: spec.bmc.bootMode sets BootSourceOverrideMode with the
// one-time boot where the BMC has it and it differs; a mode outside the BMC's
// allowable values is refused before anything is changed; a BMC without the
// property still gets its boot override.
func TestRedfishBootMode(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		fixture, mode, want string
	}{
		{"gigabyte-ami-h262-z63", "uefi", "UEFI"},      // in Legacy, both allowed
		{"openbmc-stock", "legacy", "Legacy"},          // in UEFI, both allowed
		{"dmtf-public-rackmount1", "legacy", "Legacy"}, // no allowable values listed
		{"hpe-ilo5-dl325-gen10plus", "uefi", "UEFI"},   // already UEFI: not sent
		{"gigabyte-ami-h262-z63", "", "Legacy"},        // no bootMode: left as it is
	}
	for _, c := range cases {
		t.Run(c.fixture+"/"+c.mode, func(t *testing.T) {
			sim := newBMCSim(t, simConfig{fixture: c.fixture, requireIfMatch: c.fixture == "hpe-ilo5-dl325-gen10plus"})
			d := newTestRedfish(t, sim, &logBuffer{}, func(b *resource.BMC, _ *Options) { b.BootMode = c.mode })
			defer d.Close(ctx)
			if err := d.SetNextBoot(ctx, DevicePXE); err != nil {
				t.Fatalf("SetNextBoot: %v", err)
			}
			if tg, en := sim.Boot(); tg != "Pxe" || en != "Once" {
				t.Fatalf("boot override = %s/%s, want Pxe/Once", tg, en)
			}
			if got := sim.BootMode(); got != c.want {
				t.Fatalf("BootSourceOverrideMode = %q, want %q", got, c.want)
			}
		})
	}
	t.Run("not offered", func(t *testing.T) {
		sim := newBMCSim(t, simConfig{fixture: "openbmc-stock"})
		sim.SetBootProperty("BootSourceOverrideMode@Redfish.AllowableValues", []any{"UEFI"})
		d := newTestRedfish(t, sim, &logBuffer{}, func(b *resource.BMC, _ *Options) { b.BootMode = "legacy" })
		defer d.Close(ctx)
		before, _ := sim.Boot()
		err := d.SetNextBoot(ctx, DevicePXE)
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "boot mode Legacy is not offered") {
			t.Fatalf("SetNextBoot = %v, want ErrUnsupported naming the mode", err)
		}
		if tg, _ := sim.Boot(); tg != before || sim.BootMode() != "UEFI" {
			t.Fatalf("a refused boot mode changed the BMC: %s, %s", tg, sim.BootMode())
		}
	})
	t.Run("no such property", func(t *testing.T) {
		sim := newBMCSim(t, simConfig{fixture: "openbmc-stock"})
		sim.SetBootProperty("BootSourceOverrideMode", nil)
		sim.SetBootProperty("BootSourceOverrideMode@Redfish.AllowableValues", nil)
		d := newTestRedfish(t, sim, &logBuffer{}, func(b *resource.BMC, _ *Options) { b.BootMode = "uefi" })
		defer d.Close(ctx)
		if err := d.SetNextBoot(ctx, DevicePXE); err != nil {
			t.Fatalf("SetNextBoot on a BMC without BootSourceOverrideMode: %v", err)
		}
		if tg, _ := sim.Boot(); tg != "Pxe" {
			t.Fatalf("boot override = %s", tg)
		}
	})
}

// TestRedfishResetTaskMonitor: a BMC that answers Reset with 202 and a task
// monitor is followed until the task ends; a task that ends in Exception fails
// the operation with the BMC's message, at once rather than at the state timeout.
func TestRedfishResetTaskMonitor(t *testing.T) {
	ctx := context.Background()
	sim := newBMCSim(t, simConfig{fixture: "openbmc-stock", asyncReset: 3, powerState: "Off"})
	d := newTestRedfish(t, sim, &logBuffer{})
	defer d.Close(ctx)
	if err := d.PowerOn(ctx); err != nil {
		t.Fatalf("power on through a task monitor: %v", err)
	}
	if got := sim.PowerState(); got != "On" {
		t.Fatalf("PowerState %q after the task completed", got)
	}
	polls := 0
	for _, r := range sim.Requests() {
		if r == "GET "+simTaskMonitor {
			polls++
		}
	}
	if polls != 4 {
		t.Fatalf("the task monitor was polled %d times, want 4 (three 202s, then the Task)", polls)
	}

	failing := newBMCSim(t, simConfig{fixture: "openbmc-stock", asyncReset: 1, resetTaskFails: true, powerState: "Off"})
	fd := newTestRedfish(t, failing, &logBuffer{}, func(_ *resource.BMC, o *Options) { o.StateTimeout = time.Minute })
	defer fd.Close(ctx)
	start := time.Now()
	err := fd.PowerOn(ctx)
	if err == nil || !strings.Contains(err.Error(), "task ended Exception") || !strings.Contains(err.Error(), "The power supply refused the request.") {
		t.Fatalf("a failed task: %v", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatalf("a failed task took %s to report", time.Since(start))
	}
	if got := failing.PowerState(); got != "Off" {
		t.Fatalf("a failed task changed PowerState to %q", got)
	}
}
