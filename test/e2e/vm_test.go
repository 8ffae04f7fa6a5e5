package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Firmware a VM boots with.
const (
	// SeaBIOS runs the NIC's iPXE option ROM (ipxe-qemu): iPXE does DHCP itself.
	firmwareBIOS = "bios"
	// OVMF with the NIC's ROM disabled: the firmware's own PXE client does DHCP,
	// loads iPXE over TFTP, and iPXE does DHCP again.
	firmwareUEFI = "uefi"
	// OVMF with Secure Boot on (Debian's snakeoil keys in PK, KEK and db; SMM, as
	// the secure variable store needs) and no NIC ROM.
	firmwareUEFISecureBoot = "uefi-secureboot"
)

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	// Secure Boot: the snakeoil variables trust /usr/share/ovmf/PkKek-1-snakeoil.pem.
	ovmfCodeSecureBoot = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	ovmfVarsSnakeoil   = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"
)

type vmConfig struct {
	Name     string
	MAC      string
	Firmware string
	// NIC is the QEMU device: virtio-net-pci (default) or e1000.
	NIC string
	// Disks are raw images: the first is the boot disk, after the NIC in the boot
	// order (the firmware falls through to it when iPXE exits); the others are data
	// disks.
	Disks []string
	// MemoryMB is the VM's memory (default 256; the agent environment needs 512).
	MemoryMB int
	// MayReboot lets the guest reboot (an install does); otherwise QEMU exits.
	MayReboot bool
	// Timeout bounds the VM's life (default 150 s); QEMU is killed after it.
	Timeout time.Duration
	// Extra are more QEMU arguments (-S and -qmp for a VM driven by its "BMC").
	Extra []string
	// BootDisk boots the first disk: the NIC is no boot device (a BMC's "next boot:
	// disk").
	BootDisk bool
}

// vm is a running QEMU.
type vm struct {
	cfg     vmConfig
	serial  string
	started time.Time
	done    chan struct{}
	// stop ends QEMU (SIGTERM, then SIGKILL) if it still runs.
	stop func()
}

// startVM boots a VM on a new tap of the lab's bridge. Its serial console goes to a
// file, printed if the test fails. QEMU's exit status means nothing (it exits 0 after
// a kernel panic too): tests look at what the VM did, through Kiln.
func startVM(t *testing.T, l *lab, cfg vmConfig) *vm {
	t.Helper()
	if cfg.NIC == "" {
		cfg.NIC = "virtio-net-pci"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 150 * time.Second
	}
	dir := filepath.Join(l.dir, "vm-"+cfg.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	v := &vm{cfg: cfg, serial: filepath.Join(dir, "serial.log"), done: make(chan struct{})}
	tap := l.addTap()

	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 256
	}
	args := []string{"qemu-system-x86_64",
		"-cpu", "max", "-m", fmt.Sprint(cfg.MemoryMB), "-smp", "1", "-nographic",
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
	}
	if !cfg.MayReboot {
		args = append(args, "-no-reboot")
	}
	nic := cfg.NIC + ",netdev=n0,mac=" + cfg.MAC
	if !cfg.BootDisk {
		nic += ",bootindex=1"
	}
	switch cfg.Firmware {
	case firmwareBIOS:
		args = append(args, "-machine", "pc,accel=tcg")
	case firmwareUEFI:
		requireFiles(t, ovmfCode, ovmfVars)
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		copyFile(t, ovmfVars, vars) // fresh variables: no boot entries from an earlier run
		args = append(args, "-machine", "q35,accel=tcg",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
		// No option ROM: OVMF's own PXE client, then iPXE from Kiln's TFTP server.
		nic += ",romfile="
	case firmwareUEFISecureBoot:
		requireFiles(t, ovmfCodeSecureBoot, ovmfVarsSnakeoil)
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		copyFile(t, ovmfVarsSnakeoil, vars)
		args = append(args, "-machine", "q35,smm=on,accel=tcg",
			"-global", "driver=cfi.pflash01,property=secure,value=on",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCodeSecureBoot,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
		nic += ",romfile="
	default:
		t.Fatalf("vm %s: unknown firmware %q", cfg.Name, cfg.Firmware)
	}
	args = append(args, "-device", nic)
	for i, d := range cfg.Disks {
		// cache=unsafe: the guest's flushes need not reach the host's disk; the data
		// is in the image file for the test to read either way.
		dev := fmt.Sprintf("virtio-blk-pci,drive=disk%d", i)
		switch {
		case i == 0 && cfg.BootDisk:
			dev += ",bootindex=1"
		case i == 0:
			dev += ",bootindex=2"
		}
		args = append(args, "-drive", fmt.Sprintf("file=%s,format=raw,if=none,id=disk%d,cache=unsafe", d, i), "-device", dev)
	}

	args = append(args, cfg.Extra...)

	serial, err := os.Create(v.serial)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	cmd := l.nsCommand(ctx, args...)
	v.started = time.Now()
	stamped := &stampWriter{w: serial, start: v.started, bol: true}
	cmd.Stdout, cmd.Stderr = stamped, stamped
	if err := cmd.Start(); err != nil {
		cancel()
		serial.Close()
		t.Fatalf("start QEMU for %s: %v", cfg.Name, err)
	}
	t.Logf("vm %s: %s firmware, %s %s on %s, %d MiB, disks %v", cfg.Name, cfg.Firmware, cfg.NIC, cfg.MAC, tap, cfg.MemoryMB, cfg.Disks)
	go func() {
		_ = cmd.Wait()
		serial.Close()
		close(v.done)
	}()
	v.stop = func() { stopProcess(cmd, v.done, 5*time.Second) }
	t.Cleanup(func() {
		cancel()
		stopProcess(cmd, v.done, 5*time.Second)
		if t.Failed() || os.Getenv("KILN_E2E_VERBOSE") != "" {
			t.Logf("vm %s: serial console (%s):\n%s", cfg.Name, v.serial, tail(v.serial, 80))
		}
	})
	return v
}

// exited reports whether QEMU has ended.
func (v *vm) exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// stuckMarkers are what the firmware prints when the network boot has failed:
// SeaBIOS then waits 60 s before a reset; OVMF goes on to PXE over IPv6 and HTTP
// boot, minutes of timeouts on this link.
var stuckMarkers = []string{
	"No bootable device.",                    // SeaBIOS
	"BdsDxe: failed to load",                 // OVMF: the NIC's PXE boot option failed
	"No bootable option or device was found", // OVMF
}

// stuck returns the marker if the VM's firmware has given up booting.
func (v *vm) stuck() string {
	b, err := os.ReadFile(v.serial)
	if err != nil {
		return ""
	}
	b = stripANSI(b)
	for _, m := range stuckMarkers {
		if strings.Contains(string(b), m) {
			return m
		}
	}
	return ""
}

// serialContains reports whether the serial console printed s.
func (v *vm) serialContains(s string) bool {
	b, err := os.ReadFile(v.serial)
	return err == nil && strings.Contains(string(stripANSI(b)), s)
}

// stampWriter prefixes each line of the serial console with the time since QEMU
// started, so a failing boot shows where the time went.
type stampWriter struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	bol   bool // at the beginning of a line
}

func (s *stampWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []byte
	for _, c := range p {
		if s.bol {
			out = fmt.Appendf(out, "[%6.2fs] ", time.Since(s.start).Seconds())
			s.bol = false
		}
		out = append(out, c)
		if c == '\n' {
			s.bol = true
		}
	}
	if _, err := s.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
