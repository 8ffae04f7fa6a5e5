package image

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// e2eAssets is where scripts/e2e-assets.sh leaves Debian's kernel (vmlinuz) and
// its NIC modules (modules/*.ko); KILN_E2E_ASSETS points elsewhere.
func e2eAssets(t *testing.T) string {
	dir := os.Getenv("KILN_E2E_ASSETS")
	if dir == "" {
		dir = "../../.cache/e2e"
	}
	if _, err := os.Stat(filepath.Join(dir, "vmlinuz")); err != nil {
		testkit.Missing(t, "%s", "Debian's kernel in "+dir+" (run scripts/e2e-assets.sh)")
	}
	if _, err := os.Stat(filepath.Join(dir, "modules")); err != nil {
		testkit.Missing(t, "%s", "the kernel's modules in "+dir+"/modules (run scripts/e2e-assets.sh)")
	}
	return dir
}

func staticBusybox(t *testing.T) string {
	if !IsStaticELF("/bin/busybox") {
		testkit.Missing(t, "%s", "a static /bin/busybox (Debian package busybox-static)")
	}
	return "/bin/busybox"
}

// TestBuildWithDebianKernel builds from Debian's real kernel and modules, twice:
// the module dependencies come from the modules' own .modinfo (the directory has
// no modules.dep), and the two initramfs are byte-identical.
func TestBuildWithDebianKernel(t *testing.T) {
	dir := e2eAssets(t)
	busybox := staticBusybox(t)
	var sums []string
	var res *Result
	for i := 0; i < 2; i++ {
		var err error
		res, err = Build(context.Background(), Config{Kernel: filepath.Join(dir, "vmlinuz"), ModulesDir: filepath.Join(dir, "modules"),
			Modules: []string{"virtio_pci", "virtio_net", "e1000"}, StrictModules: true, Busybox: busybox, Kiln: busybox,
			Compression: Zstd, OutDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, res.Initrd.SHA256)
	}
	if sums[0] != sums[1] {
		t.Fatalf("two builds differ: %s %s", sums[0], sums[1])
	}
	if !strings.HasPrefix(res.KernelVersion, "6.") {
		t.Errorf("kernel version %q", res.KernelVersion)
	}
	pos := map[string]int{}
	for i, m := range res.Modules {
		pos[m] = i
	}
	// Dependencies first: the order the lab notes found by hand.
	for _, pair := range [][2]string{{"virtio_ring", "virtio"}, {"virtio", "virtio_pci"}, {"failover", "net_failover"}, {"net_failover", "virtio_net"}} {
		a, okA := pos[pair[0]]
		b, okB := pos[pair[1]]
		if !okA || !okB || a > b {
			t.Errorf("%s must load before %s: order %v", pair[0], pair[1], res.Modules)
		}
	}
	t.Logf("initramfs %d bytes, modules %v", res.Initrd.Size, res.Modules)
}

// TestAgentImageBootsInQEMU boots an image built from Debian's kernel in QEMU (TCG,
// user-mode network: the guest reaches this host's loopback as 10.0.2.2). The kiln
// binary is replaced by testdata/initprobe, which runs the agent's real PID 1
// (agent.RunInit: mounts, modules, BOOTIF, DHCP) and then, as its "agent", posts
// the machine's facts here and powers off.
func TestAgentImageBootsInQEMU(t *testing.T) {
	testkit.Slow(t, "boots a VM (~15 s under TCG)")
	dir := e2eAssets(t)
	busybox := staticBusybox(t)
	qemu := testkit.NeedTool(t, "qemu-system-x86_64", "qemu-system-x86")
	probe := filepath.Join(t.TempDir(), "initprobe")
	build := exec.Command("go", "build", "-o", probe, "./testdata/initprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build initprobe: %v\n%s", err, out)
	}
	out := t.TempDir()
	modules := []string{"virtio_pci", "virtio_net", "e1000"}
	// scripts/e2e-assets.sh keeps the NIC drivers only; with virtio_blk the disk
	// shows in the facts too.
	_, err := os.Stat(filepath.Join(dir, "modules", "virtio_blk.ko"))
	withDisk := err == nil
	if withDisk {
		modules = append(modules, "virtio_blk")
	}
	res, err := Build(context.Background(), Config{Kernel: filepath.Join(dir, "vmlinuz"), ModulesDir: filepath.Join(dir, "modules"),
		Modules: modules, Busybox: busybox, Kiln: probe, Compression: Gzip, OutDir: out})
	if err != nil {
		t.Fatal(err)
	}

	facts := make(chan map[string]any, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var f map[string]any
		if json.Unmarshal(b, &f) == nil {
			select {
			case facts <- f:
			default:
			}
		}
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	disk := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(disk, nil, 0o644)
	os.Truncate(disk, 64<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-machine", "pc,accel=tcg", "-cpu", "max", "-m", "384", "-smp", "1",
		"-nographic", "-no-reboot", "-kernel", res.Kernel.Path, "-initrd", res.Initrd.Path,
		"-append", "console=ttyS0 panic=-1 BOOTIF=01-52-54-00-12-34-57 kiln.probe=http://10.0.2.2:"+strconv.Itoa(port)+"/facts",
		"-netdev", "user,id=n0", "-device", "e1000,netdev=n0,mac=52:54:00:12:34:56",
		"-netdev", "user,id=n1", "-device", "virtio-net-pci,netdev=n1,mac=52:54:00:12:34:57",
		"-drive", "file="+disk+",format=raw,if=virtio")
	cmd.Stdin = nil
	var console strings.Builder
	cmd.Stdout, cmd.Stderr = &console, &console
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var got map[string]any
	select {
	case got = <-facts:
	case err := <-waited:
		t.Fatalf("QEMU exited (%v) before the agent reported:\n%s", err, tail(console.String(), 60))
	case <-ctx.Done():
		t.Fatalf("no report from the VM:\n%s", tail(console.String(), 60))
	}
	select {
	case <-waited: // powered off
	case <-time.After(30 * time.Second):
		t.Errorf("the VM did not power off")
		cmd.Process.Kill()
	}
	t.Logf("booted and reported in %s", time.Since(start).Round(time.Millisecond))

	// The facts the real init and the real collector produced inside the VM.
	b, _ := json.Marshal(got)
	var f struct {
		CPUs     int    `json:"cpus"`
		MemoryMB int    `json:"memory_mb"`
		BootMAC  string `json:"boot_mac"`
		Disks    []struct {
			Name      string `json:"name"`
			SizeBytes int64  `json:"size_bytes"`
		} `json:"disks"`
		NICs []struct {
			Name   string `json:"name"`
			MAC    string `json:"mac"`
			Driver string `json:"driver"`
			Link   bool   `json:"link"`
			Boot   bool   `json:"boot"`
		} `json:"nics"`
	}
	json.Unmarshal(b, &f)
	if f.CPUs != 1 || f.MemoryMB < 200 || f.BootMAC != "52:54:00:12:34:57" {
		t.Errorf("facts %s", b)
	}
	if withDisk && (len(f.Disks) != 1 || f.Disks[0].Name != "vda" || f.Disks[0].SizeBytes != 64<<20) {
		t.Errorf("disks %+v", f.Disks)
	}
	drivers := map[string]bool{}
	for _, n := range f.NICs {
		drivers[n.Driver] = true
		if n.MAC == "52:54:00:12:34:57" && (!n.Boot || !n.Link || n.Driver != "virtio_net") {
			t.Errorf("boot NIC %+v", n)
		}
	}
	if !drivers["virtio_net"] || !drivers["e1000"] {
		t.Errorf("NIC drivers %v (both modules must have loaded)", drivers)
	}
	// init brought up the BOOTIF NIC, not the first one.
	if !strings.Contains(console.String(), "network up") || !strings.Contains(console.String(), "lease of 10.0.2.15") {
		t.Errorf("console:\n%s", tail(console.String(), 30))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
