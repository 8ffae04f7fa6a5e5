package power

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// ipmiSim is OpenIPMI's ipmi_sim, a real IPMI v2.0 LAN BMC, with its chassis
// control wired to a script that keeps the power state and boot device in files
// (ipmi_lan(5) "chassis_control", the protocol of OpenIPMI's example
// ipmi_sim_chassiscontrol: `<dev> get power boot`, `<dev> set power 1`).
type ipmiSim struct {
	dir  string
	addr string
}

const chassisScript = `#!/bin/sh
dir=%q
shift # the device
op=$1; shift
echo "$op $*" >> "$dir/calls"
case $op in
get)
	for p in "$@"; do
		case $p in
		power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)" ;;
		boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
		*) echo "Invalid parameter: $p"; exit 1 ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		p=$1; v=$2; shift 2
		[ -e "$dir/stuck" ] && continue # a machine that ignores its BMC
		case $p in
		power) echo "$v" > "$dir/power" ;;
		shutdown) [ "$v" = 1 ] && echo 0 > "$dir/power" ;; # an OS that obeys ACPI
		boot) echo "$v" > "$dir/boot" ;;
		esac
	done ;;
*) exit 1 ;;
esac
`

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func startIPMISim(t *testing.T) *ipmiSim {
	t.Helper()
	requireTool(t, "ipmi_sim", "ipmitool")
	dir := t.TempDir()
	port := freeUDPPort(t)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	script := write("chassis.sh", fmt.Sprintf(chassisScript, dir), 0o700)
	lan := write("lan.conf", fmt.Sprintf(`name "kilntest"
set_working_mc 0x20
startlan 1
  addr 127.0.0.1 %d
  priv_limit admin
  allowed_auths_callback none md2 md5 straight
  allowed_auths_user none md2 md5 straight
  allowed_auths_operator none md2 md5 straight
  allowed_auths_admin none md2 md5 straight
  guid a123456789abcdefa123456789abcdef
endlan
chassis_control "%s 0x20"
user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, script, testUser, testPassword), 0o600)
	emu := write("sim.emu", "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n", 0o600)
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o700)

	// ipmi_sim needs a stdin it can poll even with -n (with /dev/null it
	// aborts in its selector); a pipe kept open does.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command("ipmi_sim", "-c", lan, "-f", emu, "-s", state, "-n")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pr, &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		pw.Close()
	})
	sim := &ipmiSim{dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	d := sim.driver(t, testPassword, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := d.Status(context.Background())
		if err == nil {
			return sim
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipmi_sim did not answer: %v; its output: %s", err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *ipmiSim) driver(t *testing.T, password string, log *logBuffer, mutate ...func(*Options)) Driver {
	t.Helper()
	if log == nil {
		log = &logBuffer{}
	}
	opts := fastOptions(log)
	opts.RequestTimeout = 8 * time.Second
	opts.PollInterval = 100 * time.Millisecond
	opts.StateTimeout = 15 * time.Second
	// ipmi_sim does not answer Get Channel Cipher Suites, which ipmitool sends
	// to pick a suite when none is given.
	opts.IPMICipherSuite = "3"
	for _, m := range mutate {
		m(&opts)
	}
	d, err := New(context.Background(), resource.BMC{Driver: "ipmi", Address: s.addr, CredentialsSecret: "bmc"},
		staticCreds{testUser, password}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (s *ipmiSim) file(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.dir, name))
	return strings.TrimSpace(string(b))
}

func TestIPMI(t *testing.T) {
	sim := startIPMISim(t)
	ctx := context.Background()
	log := &logBuffer{}

	// ipmitool runs through a wrapper that records its command line, to check
	// that the password never is on it.
	argvLog := filepath.Join(sim.dir, "argv")
	tool, err := exec.LookPath("ipmitool")
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(sim.dir, "ipmitool-wrapper")
	os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %q\nexec %q \"$@\"\n", argvLog, tool)), 0o700)
	d := sim.driver(t, testPassword, log, func(o *Options) { o.IPMITool = wrapper })

	var errs []string
	step := func(what string, err error, wantPower string) {
		t.Helper()
		errs = append(errs, errText(err))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := sim.file("power"); wantPower != "" && got != wantPower {
			t.Fatalf("after %s the chassis power is %q, want %q", what, got, wantPower)
		}
	}
	st, err := d.Status(ctx)
	step("status", err, "")
	if st != StateOff {
		t.Fatalf("initial status %s", st)
	}
	step("power on", d.PowerOn(ctx), "1")
	step("set next boot pxe", d.SetNextBoot(ctx, DevicePXE), "1")
	if got := sim.file("boot"); got != "pxe" {
		t.Fatalf("boot device %q, want pxe", got)
	}
	step("power cycle", d.PowerCycle(ctx), "1")
	if calls := sim.file("calls"); !strings.Contains(calls, "set power 0") {
		t.Fatalf("the cycle never switched power off: %s", calls)
	}
	step("soft off", d.SoftOff(ctx), "0")
	if calls := sim.file("calls"); !strings.Contains(calls, "set shutdown 1") {
		t.Fatalf("soft off was not an ACPI shutdown request: %s", calls)
	}
	step("power cycle when off", d.PowerCycle(ctx), "1")
	step("power off", d.PowerOff(ctx), "0")
	step("power off when off", d.PowerOff(ctx), "0")
	if st, err := d.Status(ctx); err != nil || st != StateOff {
		t.Fatalf("status %s, %v", st, err)
	}

	// spec.bmc.bootMode uefi: the one-time boot carries IPMI's EFI boot flag,
	// which ipmi_sim accepts.
	if strings.Contains(sim.file("argv"), "efiboot") {
		t.Fatal("options=efiboot sent without bootMode uefi")
	}
	uefi, err := New(ctx, resource.BMC{Driver: "ipmi", Address: sim.addr, CredentialsSecret: "bmc", BootMode: "uefi"},
		staticCreds{testUser, testPassword}, func() Options {
			o := fastOptions(log)
			o.RequestTimeout, o.IPMICipherSuite, o.IPMITool = 8*time.Second, "3", wrapper
			return o
		}())
	if err != nil {
		t.Fatal(err)
	}
	step("set next boot pxe (uefi)", uefi.SetNextBoot(ctx, DevicePXE), "")
	if got := sim.file("boot"); got != "pxe" {
		t.Fatalf("boot device %q, want pxe", got)
	}
	if !strings.Contains(sim.file("argv"), "chassis bootdev pxe options=efiboot") {
		t.Fatalf("bootMode uefi did not ask for an EFI boot: %s", sim.file("argv"))
	}

	argv := sim.file("argv")
	if !strings.Contains(argv, "-E") || !strings.Contains(argv, "chassis power") {
		t.Fatalf("unexpected ipmitool command lines: %s", argv)
	}
	assertNoSecret(t, "ipmitool command line", argv)
	assertNoSecret(t, "errors", errs...)
	assertNoSecret(t, "log", log.String())
}

func TestIPMIBadInput(t *testing.T) {
	sim := startIPMISim(t)
	ctx := context.Background()
	closed := freeUDPPort(t)

	t.Run("wrong password", func(t *testing.T) {
		log := &logBuffer{}
		_, err := sim.driver(t, "wrong-password", log).Status(ctx)
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("Status = %v, want ErrAuth", err)
		}
		if strings.Contains(err.Error(), "wrong-password") || strings.Contains(log.String(), "wrong-password") {
			t.Fatalf("the password leaked: %v", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		start := time.Now()
		d := &ipmiSim{addr: fmt.Sprintf("127.0.0.1:%d", closed)}
		_, err := d.driver(t, testPassword, nil, func(o *Options) { o.RequestTimeout = 3 * time.Second }).Status(ctx)
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("Status = %v, want ErrUnreachable", err)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("took %s", time.Since(start))
		}
		assertNoSecret(t, "error", err.Error())
	})
	t.Run("never reaches the state", func(t *testing.T) {
		os.WriteFile(filepath.Join(sim.dir, "stuck"), nil, 0o600)
		defer os.Remove(filepath.Join(sim.dir, "stuck"))
		err := sim.driver(t, testPassword, nil, func(o *Options) { o.StateTimeout = time.Second }).PowerOn(ctx)
		if !errors.Is(err, ErrStateTimeout) || !strings.Contains(err.Error(), "chassis power is still off") {
			t.Fatalf("PowerOn = %v, want ErrStateTimeout", err)
		}
	})
	t.Run("no ipmitool", func(t *testing.T) {
		_, err := sim.driver(t, testPassword, nil, func(o *Options) { o.IPMITool = "/nonexistent/ipmitool" }).Status(ctx)
		if !errors.Is(err, ErrConfig) {
			t.Fatalf("Status = %v, want ErrConfig", err)
		}
	})
}

func TestIPMIAddress(t *testing.T) {
	cases := []struct{ in, host, port string }{
		{"10.0.0.7", "10.0.0.7", "623"},
		{"10.0.0.7:6230", "10.0.0.7", "6230"},
		{"ipmi://bmc.example:623", "bmc.example", "623"},
		{"lanplus://bmc.example", "bmc.example", "623"},
		{"[fd00::7]:623", "fd00::7", "623"},
		{"fd00::7", "fd00::7", "623"},
	}
	for _, c := range cases {
		h, p, err := parseIPMIAddress(c.in)
		if err != nil || h != c.host || p != c.port {
			t.Errorf("%q: %q %q %v", c.in, h, p, err)
		}
	}
	for _, bad := range []string{"", "-H evil", "user:pw@10.0.0.7", "10.0.0.7:0", "10.0.0.7:x", "https://10.0.0.7/x"} {
		if _, _, err := parseIPMIAddress(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("%q: %v, want ErrConfig", bad, err)
		}
	}
}

func TestIPMIErrorClassification(t *testing.T) {
	cases := []struct {
		out  string
		want error
	}{
		{"Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n", ErrAuth},
		{"RAKP 2 message indicates an error : unauthorized name\nError: Unable to establish IPMI v2 / RMCP+ session\n", ErrAuth},
		{"Get Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n", ErrUnreachable},
		{"Set Chassis Power Control to Cycle failed: Command not supported in present state\n", ErrRejected},
	}
	for _, c := range cases {
		if err := ipmitoolError("ipmitool chassis power status", c.out, errors.New("exit status 1")); !errors.Is(err, c.want) {
			t.Errorf("%q: %v, want %v", c.out, err, c.want)
		}
	}
	for _, c := range []struct {
		out  string
		want State
	}{{"Chassis Power is on\n", StateOn}, {"Chassis Power is off\n", StateOff}} {
		if s, err := parseIPMIStatus(c.out); err != nil || s != c.want {
			t.Errorf("%q: %s %v", c.out, s, err)
		}
	}
	if _, err := parseIPMIStatus("garbage"); !errors.Is(err, ErrMalformed) {
		t.Errorf("garbage status: %v", err)
	}
}
