package power

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// shortTempDir: unix socket paths are limited to 108 bytes, t.TempDir's can be long.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "kq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// startQEMU runs a real QEMU with a QMP socket and nothing to boot: -S holds it
// at the reset vector ("prelaunch", off) until cont.
func startQEMU(t *testing.T, machine string) string {
	t.Helper()
	requireTool(t, "qemu-system-x86_64")
	sock := filepath.Join(shortTempDir(t), "vm.qmp")
	cmd := exec.Command("qemu-system-x86_64", "-machine", machine, "-nodefaults", "-display", "none", "-S", "-no-shutdown",
		"-m", "16", "-qmp", "unix:"+sock+",server=on,wait=off")
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU's QMP socket did not appear: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func qemuDriver(t *testing.T, address string, mutate ...func(*Options)) Driver {
	t.Helper()
	opts := fastOptions(&logBuffer{})
	opts.PollInterval = 10 * time.Millisecond
	for _, m := range mutate {
		m(&opts)
	}
	d, err := New(context.Background(), resource.BMC{Driver: "qemu", Address: address}, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantStatus(t *testing.T, d Driver, want State) {
	t.Helper()
	if st, err := d.Status(context.Background()); err != nil || st != want {
		t.Fatalf("Status = %s, %v; want %s", st, err, want)
	}
}

func TestQEMU(t *testing.T) {
	sock := startQEMU(t, "none")
	ctx := context.Background()
	d := qemuDriver(t, "unix://"+sock, func(o *Options) { o.StateTimeout = 500 * time.Millisecond })
	defer d.Close(ctx)

	wantStatus(t, d, StateOff)
	for _, step := range []struct {
		name string
		op   func(context.Context) error
		want State
	}{
		{"power on", d.PowerOn, StateOn},
		{"power on when on", d.PowerOn, StateOn},
		{"power cycle", d.PowerCycle, StateOn},
		{"power off", d.PowerOff, StateOff},
		{"power off when off", d.PowerOff, StateOff},
		{"power cycle when off", d.PowerCycle, StateOn},
	} {
		if err := step.op(ctx); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		wantStatus(t, d, step.want)
	}

	// -machine none has no ACPI: the power button is pressed, nothing answers,
	// and the wait ends at StateTimeout instead of hanging.
	start := time.Now()
	if err := d.SoftOff(ctx); !errors.Is(err, ErrStateTimeout) {
		t.Fatalf("SoftOff without a guest: %v, want ErrStateTimeout", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("SoftOff took %s", time.Since(start))
	}
	// ... and it has no boot order to set.
	if err := d.SetNextBoot(ctx, DevicePXE); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("SetNextBoot on -machine none: %v, want ErrUnsupported", err)
	}
}

func TestQEMUSetNextBoot(t *testing.T) {
	sock := startQEMU(t, "pc")
	d := qemuDriver(t, sock)
	for _, dev := range []Device{DevicePXE, DeviceDisk, DeviceCDROM} {
		if err := d.SetNextBoot(context.Background(), dev); err != nil {
			t.Fatalf("SetNextBoot(%s): %v", dev, err)
		}
	}
}

func TestQEMULauncher(t *testing.T) {
	requireTool(t, "qemu-system-x86_64")
	dir := shortTempDir(t)
	sock, pidfile, launches := filepath.Join(dir, "vm.qmp"), filepath.Join(dir, "pid"), filepath.Join(dir, "launches")
	launcher := filepath.Join(dir, "launch")
	os.WriteFile(launcher, []byte(fmt.Sprintf(`#!/bin/sh
echo "boot=$KILN_BOOT_DEVICE" >> %q
exec qemu-system-x86_64 -machine none -nodefaults -display none -S -no-shutdown -m 16 \
	-qmp "unix:$KILN_QMP_SOCKET,server=on,wait=off" -daemonize -pidfile %q
`, launches, pidfile)), 0o700)
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidfile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	ctx := context.Background()
	d := qemuDriver(t, sock, func(o *Options) { o.QEMULauncher = []string{launcher} })

	wantStatus(t, d, StateOff) // no QEMU yet
	if err := d.SetNextBoot(ctx, DevicePXE); err != nil {
		t.Fatalf("SetNextBoot before launch: %v", err)
	}
	if err := d.PowerOn(ctx); err != nil {
		t.Fatalf("PowerOn: %v", err)
	}
	wantStatus(t, d, StateOn)
	if b, _ := os.ReadFile(launches); strings.TrimSpace(string(b)) != "boot=pxe" {
		t.Fatalf("launcher saw %q, want boot=pxe", b)
	}
	if err := d.PowerOff(ctx); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	wantStatus(t, d, StateOff)
	if err := d.PowerCycle(ctx); err != nil { // off: launched again, without a boot device
		t.Fatalf("PowerCycle: %v", err)
	}
	wantStatus(t, d, StateOn)
	if b, _ := os.ReadFile(launches); !strings.HasSuffix(strings.TrimSpace(string(b)), "boot=") {
		t.Fatalf("second launch saw %q, want no boot device", b)
	}
	if err := d.PowerOff(ctx); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
}

// fakeQMP is a scripted QMP server for what a real QEMU cannot show without a
// guest OS: a guest that powered itself off ("shutdown" under -no-shutdown),
// plus broken and silent peers.
type fakeQMP struct {
	mu       sync.Mutex
	status   string
	commands []string
	mode     string // "", "garbage", "silent"
}

func (f *fakeQMP) start(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "fake.qmp")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return sock
}

func (f *fakeQMP) serve(c net.Conn) {
	defer c.Close()
	switch f.mode {
	case "silent":
		time.Sleep(5 * time.Second)
		return
	case "garbage":
		fmt.Fprintln(c, `{"QMP": {"version": {}, "capabilities": []}}`)
		bufio.NewReader(c).ReadString('\n') // qmp_capabilities
		fmt.Fprintln(c, `{"return": {}, oops`)
		time.Sleep(100 * time.Millisecond)
		return
	}
	fmt.Fprintln(c, `{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": ["oob"]}}`)
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var m struct {
			Execute string `json:"execute"`
		}
		json.Unmarshal(sc.Bytes(), &m)
		f.mu.Lock()
		f.commands = append(f.commands, m.Execute)
		var reply any = map[string]any{}
		var qerr string
		switch m.Execute {
		case "query-status":
			reply = map[string]any{"status": f.status, "running": f.status == "running"}
		case "system_reset":
			if f.status != "running" {
				f.status = "prelaunch"
			}
			fmt.Fprintln(c, `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", "data": {"guest": false}}`)
		case "cont":
			if needsReset(f.status) {
				qerr = "Resetting the Virtual Machine is required"
			} else {
				f.status = "running"
			}
		}
		f.mu.Unlock()
		if qerr != "" {
			fmt.Fprintf(c, `{"error": {"class": "GenericError", "desc": %q}}`+"\n", qerr)
			continue
		}
		b, _ := json.Marshal(map[string]any{"return": reply})
		c.Write(append(b, '\n'))
	}
}

func TestQEMUGuestShutdown(t *testing.T) {
	f := &fakeQMP{status: "shutdown"}
	d := qemuDriver(t, f.start(t))
	wantStatus(t, d, StateOff)
	if err := d.PowerOn(context.Background()); err != nil {
		t.Fatalf("PowerOn after a guest shutdown: %v", err)
	}
	wantStatus(t, d, StateOn)
	f.mu.Lock()
	defer f.mu.Unlock()
	var acts []string
	for _, c := range f.commands {
		if c != "qmp_capabilities" && c != "query-status" {
			acts = append(acts, c)
		}
	}
	if !slices.Equal(acts, []string{"system_reset", "cont"}) {
		t.Fatalf("commands %v, want system_reset then cont", acts)
	}
}

func TestQEMUBadInput(t *testing.T) {
	cases := []struct {
		name string
		addr func(t *testing.T) string
		want error
	}{
		{"garbage", func(t *testing.T) string { return (&fakeQMP{mode: "garbage"}).start(t) }, ErrMalformed},
		{"silent", func(t *testing.T) string { return (&fakeQMP{mode: "silent"}).start(t) }, ErrUnreachable},
		{"no socket", func(t *testing.T) string { return filepath.Join(shortTempDir(t), "absent.qmp") }, ErrUnreachable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := qemuDriver(t, c.addr(t), func(o *Options) { o.RequestTimeout = 300 * time.Millisecond })
			start := time.Now()
			_, err := d.Status(context.Background())
			if !errors.Is(err, c.want) {
				t.Fatalf("Status = %v, want %v", err, c.want)
			}
			if err := d.PowerOn(context.Background()); !errors.Is(err, c.want) {
				t.Fatalf("PowerOn = %v, want %v", err, c.want)
			}
			if time.Since(start) > 3*time.Second {
				t.Fatalf("took %s", time.Since(start))
			}
		})
	}
}
