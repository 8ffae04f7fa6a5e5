package agent

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// InitOptions configure RunInit.
type InitOptions struct {
	Logger *slog.Logger
	// AgentArgs are the arguments of the agent process, after the kiln binary
	// (agent run ...). The enrollment parameters come from the kernel command line.
	AgentArgs []string
	// AgentEnv is added to the agent process's environment.
	AgentEnv []string
}

// RunInit is PID 1 of the agent environment (`kiln agent init`, started by the
// initramfs's /init). It mounts the kernel filesystems, loads the modules the image
// lists, brings up the boot NIC (BOOTIF from the command line, else the first NIC
// with a link) with DHCP, then runs and supervises `kiln agent run`, reaping every
// orphan, as PID 1 must. It does not return unless setup fails before the agent
// could start.
func RunInit(opts InitOptions) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	// Signals the kernel sends init (Ctrl-Alt-Del: SIGINT) must not kill it: PID 1
	// exiting is a kernel panic.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	os.Setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
	os.Setenv("HOME", "/root")

	mountKernelFilesystems(log)
	if out, err := exec.Command("/"+agentwire.BusyboxPath, "--install", "-s", "/bin").CombinedOutput(); err != nil {
		log.Warn("busybox --install", "err", err, "out", strings.TrimSpace(string(out)))
	}
	unix.Sethostname([]byte("kiln-agent"))
	cmdlineText, _ := os.ReadFile("/proc/cmdline")
	cmdline := ParseCmdline(string(cmdlineText))

	n, failed := LoadModules(log, "/"+agentwire.ModuleListPath)
	log.Info("kernel modules loaded", "loaded", n, "failed", failed)

	if _, ok := cmdline["kiln.shell"]; ok {
		go consoleShell(log)
	}
	run(log, "ip", "link", "set", "lo", "up")
	for attempt := 1; ; attempt++ {
		ifc, err := bringUpBootNIC(log, cmdline.BootMAC())
		if err == nil {
			log.Info("network up", "interface", ifc, "lease", readTrim("/run/kiln-dhcp"))
			break
		}
		d := min(time.Duration(attempt)*5*time.Second, time.Minute)
		log.Error("network", "err", err, "retry_in", d)
		time.Sleep(d)
	}
	return supervise(log, opts)
}

func mountKernelFilesystems(log *slog.Logger) {
	mounts := []struct {
		fstype, target string
		flags          uintptr
		data           string
	}{
		{"proc", "/proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		// devtmpfs: the kernel creates device nodes itself (disks, partitions after a
		// new table): there is no udev here.
		{"devtmpfs", "/dev", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=620"},
		{"tmpfs", "/run", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	}
	for _, m := range mounts {
		os.MkdirAll(m.target, 0o755)
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			log.Warn("mount", "fs", m.fstype, "on", m.target, "err", err)
		}
	}
	// securityfs: the firmware's TCG event log (tpm0/binary_bios_measurements),
	// which a TPM enrollment sends with its quote.
	if _, err := os.Stat("/sys/kernel/security"); err == nil {
		unix.Mount("securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	// efivarfs for UEFI machines (an action may set boot entries); absent on BIOS.
	if _, err := os.Stat("/sys/firmware/efi/efivars"); err == nil {
		unix.Mount("efivarfs", "/sys/firmware/efi/efivars", "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
}

// LoadModules loads the modules listed in listFile, one path a line, in order, with
// finit_module(2). A module that is already loaded, or whose hardware is absent
// (ENODEV, as crc32c_intel on a CPU without SSE4.2), is not a failure worth more
// than a debug line.
func LoadModules(log *slog.Logger, listFile string) (loaded, failed int) {
	f, err := os.Open(listFile)
	if err != nil {
		log.Warn("no module list", "file", listFile, "err", err)
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		err := loadModule(p)
		switch {
		case err == nil:
			loaded++
		case errors.Is(err, unix.EEXIST):
		case errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT):
			log.Debug("module not for this machine", "module", filepath.Base(p), "err", err)
		default:
			failed++
			log.Warn("module", "module", filepath.Base(p), "err", err)
		}
	}
	return loaded, failed
}

func loadModule(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}

// bringUpBootNIC picks the NIC to configure: the one with the BOOTIF MAC (the NIC
// iPXE booted from, which is on the provisioning network) if there is one, else the
// first NIC with a carrier; then runs DHCP on it. udhcpc stays in the background
// to renew the lease.
func bringUpBootNIC(log *slog.Logger, bootMAC string) (string, error) {
	// Drivers probe asynchronously: give NICs time to appear.
	var nics []NIC
	for i := 0; i < 100; i++ {
		nics = physicalNICs(&System{}, bootMAC)
		if len(nics) > 0 && (bootMAC == "" || hasBootNIC(nics)) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(nics) == 0 {
		return "", errors.New("no network interface appeared (is its driver in the image's module list?)")
	}
	for _, n := range nics {
		run(log, "ip", "link", "set", n.Name, "up")
	}
	var candidates []string
	for _, n := range nics {
		if n.Boot {
			candidates = append(candidates, n.Name)
		}
	}
	if len(candidates) == 0 {
		if bootMAC != "" {
			log.Warn("no NIC has the BOOTIF MAC; trying those with a link", "boot_mac", bootMAC)
		}
		// Carrier comes up a few seconds after the link is set up (autonegotiation).
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) && len(candidates) == 0 {
			time.Sleep(500 * time.Millisecond)
			for _, n := range physicalNICs(&System{}, "") {
				if n.Link {
					candidates = append(candidates, n.Name)
				}
			}
		}
		slices.Sort(candidates)
	}
	if len(candidates) == 0 {
		return "", fmt.Errorf("no NIC has a link (%d NICs)", len(nics))
	}
	var errs []error
	for _, ifc := range candidates {
		log.Info("DHCP", "interface", ifc)
		// -n: give up (exit 1) without a lease; -t/-T: 10 discovers 2 s apart; -A: wait
		// 5 s before the next round. Without -q it forks into the background once bound.
		err := runOnConsole("udhcpc", "-i", ifc, "-s", "/"+agentwire.DHCPScriptPath, "-n", "-t", "10", "-T", "2", "-A", "5",
			"-x", "hostname:kiln-agent", "-V", "kiln-agent")
		if err == nil {
			return ifc, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ifc, err))
	}
	return "", fmt.Errorf("DHCP failed: %w", errors.Join(errs...))
}

func hasBootNIC(nics []NIC) bool {
	for _, n := range nics {
		if n.Boot {
			return true
		}
	}
	return false
}

func run(log *slog.Logger, name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		log.Debug("command failed", "cmd", name+" "+strings.Join(args, " "), "err", err, "out", strings.TrimSpace(string(out)))
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// runOnConsole runs a command with its output on the console. udhcpc needs it: it
// forks into the background holding its stdout, so a pipe would never close.
func runOnConsole(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// consoleShell keeps a root shell on the console (kiln.shell on the command line),
// for debugging a machine that does not reach Kiln.
func consoleShell(log *slog.Logger) {
	for {
		cmd := exec.Command("/bin/sh")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		if err := cmd.Start(); err != nil {
			log.Warn("console shell", "err", err)
			return
		}
		// The reaper collects it; wait for its pid to vanish.
		for syscall.Kill(cmd.Process.Pid, 0) == nil {
			time.Sleep(time.Second)
		}
	}
}

// supervise runs the agent and restarts it when it exits, reaping all children.
func supervise(log *slog.Logger, opts InitOptions) error {
	self, err := os.Executable()
	if err != nil {
		self = "/" + agentwire.KilnPath
	}
	start := func() int {
		attr := &os.ProcAttr{Env: append(os.Environ(), opts.AgentEnv...), Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}}
		p, err := os.StartProcess(self, append([]string{self}, opts.AgentArgs...), attr)
		if err != nil {
			log.Error("start agent", "err", err)
			return 0
		}
		log.Info("agent started", "pid", p.Pid)
		return p.Pid
	}
	agent := start()
	restarts := 0
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// ECHILD: nothing to wait for (the agent failed to start).
			time.Sleep(time.Second)
		}
		if pid != agent && agent != 0 {
			continue // an orphan (udhcpc, a shell): reaped
		}
		restarts++
		d := min(time.Duration(restarts)*2*time.Second, 30*time.Second)
		log.Warn("agent exited; restarting", "status", describeWait(ws), "in", d)
		time.Sleep(d)
		agent = start()
	}
}

func describeWait(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit %d", ws.ExitStatus())
	case ws.Signaled():
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %#x", uint32(ws))
}
