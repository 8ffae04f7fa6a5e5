package e2e

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// The install scenarios' environment: Kiln with HTTPS (enrollment, the agent API over
// mTLS) and DHCP, the agent environment built from the tree under test, the disk
// image scripts/e2e-assets.sh builds, and VMs that may reboot and have disks.

const (
	kilnHTTPSPort = "8443"
	kilnHTTPSURL  = "https://" + kilnIP + ":" + kilnHTTPSPort
	// installDiskAsset is the bootable disk image, relative to assetDir.
	installDiskAsset = "install/disk.img.zst"
)

// requireInstall checks what the install scenarios need beyond requireLab's: the disk
// image, and the disk and ext4 modules the agent image carries.
func requireInstall(t *testing.T) {
	t.Helper()
	var missing []string
	for _, f := range []string{
		filepath.Join(assetDir, installDiskAsset),
		filepath.Join(assetDir, installDiskAsset+".sha256"),
		filepath.Join(assetDir, "modules", "virtio_blk.ko"),
		filepath.Join(assetDir, "modules", "ext4.ko"),
		"/bin/busybox",
	} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		missingPrerequisite(t, "%s", strings.Join(missing, ", "))
	}
}

// startInstallKiln starts `kiln serve` in the namespace as an operator would for
// provisioning: DHCP (full mode, from the Subnet object) and TFTP on the bridge, HTTPS
// for enrollment and the agent API, and no --public-url, so the workflow's artifact
// URLs are paths the agent resolves against the URL it enrolled at.
func startInstallKiln(t *testing.T, l *lab) *kilnServer {
	t.Helper()
	return startKiln(t, l, kilnOptions{dhcp: true, https: true})
}

// cli runs a kiln command in the namespace against the server, as an operator would,
// and returns its output; failure ends the test.
func (k *kilnServer) cli(args ...string) string {
	k.t.Helper()
	cmd := k.l.nsCommand(context.Background(), append([]string{testkit.KilnBinary(k.t), "--data-dir", k.dataDir}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		k.t.Fatalf("kiln %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// getJSON GETs an API path and decodes the answer into v.
func (k *kilnServer) getJSON(path string, v any) error {
	b, code, err := k.get(path)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, code, b)
	}
	return json.Unmarshal(b, v)
}

// machineState is a machine's status.state as the API reports it.
func (k *kilnServer) machineState(name string) string {
	k.t.Helper()
	var m struct {
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	if err := k.getJSON("/api/v1/machines/"+name, &m); err != nil {
		k.t.Fatalf("machine %s: %v", name, err)
	}
	return m.Status.State
}

// workflowView is GET /api/v1/machines/{name}/workflow.
type workflowView struct {
	Name   string `json:"name"`
	Status struct {
		State   string `json:"state"`
		Message string `json:"message"`
		Actions []struct {
			Name     string         `json:"name"`
			Type     string         `json:"type"`
			State    string         `json:"state"`
			Attempts int            `json:"attempts"`
			Args     map[string]any `json:"args"`
			Message  string         `json:"message"`
			Log      []string       `json:"log"`
		} `json:"actions"`
	} `json:"status"`
}

func (k *kilnServer) machineWorkflow(name string) workflowView {
	k.t.Helper()
	var wf workflowView
	if err := k.getJSON("/api/v1/machines/"+name+"/workflow", &wf); err != nil {
		k.t.Fatalf("workflow of machine %s: %v", name, err)
	}
	return wf
}

var (
	staticKilnOnce sync.Once
	staticKilnPath string
	staticKilnErr  error
)

// staticKiln is a statically linked kiln of the tree under test, for the agent
// environment's initramfs (PID 1 there has no dynamic loader): $KILN_TEST_BIN if that
// is static, else built once beside the kit's binary (-s -w keep it small).
func staticKiln(t *testing.T) string {
	t.Helper()
	kilnBin := testkit.KilnBinary(t)
	if isStaticELF(kilnBin) {
		return kilnBin
	}
	if os.Getenv(testkit.BinaryEnv) != "" {
		t.Fatalf("%s=%s is dynamically linked: the install tests boot it as the agent, so build it with CGO_ENABLED=0", testkit.BinaryEnv, kilnBin)
	}
	staticKilnOnce.Do(func() {
		p := filepath.Join(filepath.Dir(kilnBin), "kiln-static")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", p, "../../cmd/kiln")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			staticKilnErr = fmt.Errorf("CGO_ENABLED=0 go build: %v\n%s", err, out)
			return
		}
		staticKilnPath = p
	})
	if staticKilnErr != nil {
		t.Fatal(staticKilnErr)
	}
	return staticKilnPath
}

func isStaticELF(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// agentModules are what the agent environment loads: the NIC, the disks, and ext4
// for write-file (each with its dependencies, which kiln image build resolves).
const agentModules = "virtio_pci,virtio_net,virtio_blk,ext4"

// buildAgentEnv runs `kiln image build` into Kiln's artifact directory, as the
// operator's docs say, and returns the Artifact manifest it prints (the two objects
// kiln serve's --agent-kernel and --agent-initrd name by default).
func buildAgentEnv(t *testing.T, k *kilnServer) string {
	t.Helper()
	return buildAgentEnvModules(t, k, agentModules)
}

// buildAgentEnvModules is buildAgentEnv with another module list.
func buildAgentEnvModules(t *testing.T, k *kilnServer, modules string) string {
	t.Helper()
	start := time.Now()
	bin := staticKiln(t)
	var stdout, stderr strings.Builder
	cmd := exec.Command(bin, "image", "build",
		"--kernel", filepath.Join(assetDir, "vmlinuz"),
		"--modules-dir", filepath.Join(assetDir, "modules"),
		"--modules", modules,
		"--compression", "zstd",
		"--out", filepath.Join(k.artifactDir, "agent"),
		"--no-progress")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kiln image build: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	var head []string
	for _, line := range strings.Split(stdout.String(), "\n") {
		if strings.HasPrefix(line, "#") {
			head = append(head, line)
		}
	}
	t.Logf("agent environment built in %s:\n%s", time.Since(start).Round(time.Millisecond), strings.Join(head, "\n"))
	return stdout.String()
}

// diskArtifact copies the disk image into Kiln's artifact directory and returns its
// sha256, checked against the one scripts/e2e-assets.sh recorded.
func diskArtifact(t *testing.T, k *kilnServer) (source, sum string, size int64) {
	t.Helper()
	source = installDiskAsset
	dst := filepath.Join(k.artifactDir, source)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(assetDir, installDiskAsset), dst)
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if size, err = io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	rec, err := os.ReadFile(filepath.Join(assetDir, installDiskAsset+".sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(rec)); len(f) == 0 || f[0] != sum {
		t.Fatalf("%s has sha256 %s, but %s.sha256 says %q: rerun scripts/e2e-assets.sh", installDiskAsset, sum, installDiskAsset, strings.TrimSpace(string(rec)))
	}
	return source, sum, size
}

// blankDisk is a sparse raw disk image of size bytes in the lab's directory; head,
// if set, is written at its start (an earlier system's boot sector).
func blankDisk(t *testing.T, l *lab, name string, size int64, head []byte) string {
	t.Helper()
	p := filepath.Join(l.dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(head); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// startInstallVM boots a BIOS VM (SeaBIOS, virtio-net's iPXE ROM) that installs onto
// its disks: memory for the agent environment, and reboots allowed.
func startInstallVM(t *testing.T, l *lab, name, mac string, disks []string, timeout time.Duration) *vm {
	t.Helper()
	return startVM(t, l, vmConfig{Name: name, MAC: mac, Firmware: firmwareBIOS, Disks: disks, MemoryMB: 512, MayReboot: true, Timeout: timeout})
}

// gptPartition is a partition of a disk image as sfdisk reads it: an independent
// reader of what the image and the partition action wrote.
type gptPartition struct {
	Start int64  `json:"start"` // sectors
	Size  int64  `json:"size"`
	Type  string `json:"type"`
	Name  string `json:"name"`
	Attrs string `json:"attrs"`
}

func readGPT(t *testing.T, img string) []gptPartition {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", img, err)
	}
	var pt struct {
		Table struct {
			Label      string         `json:"label"`
			SectorSize int64          `json:"sectorsize"`
			Partitions []gptPartition `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatalf("sfdisk --json %s: %v\n%s", img, err, out)
	}
	if pt.Table.Label != "gpt" || pt.Table.SectorSize != 512 {
		t.Fatalf("%s: partition table %q with %d-byte sectors, want gpt with 512", img, pt.Table.Label, pt.Table.SectorSize)
	}
	return pt.Table.Partitions
}

// readExt4File reads a file from the ext4 filesystem that starts at sector start of
// a disk image, with debugfs (no mount, no loop device).
func readExt4File(t *testing.T, img string, start int64, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, fmt.Sprintf("%s?offset=%d", img, start*512)).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s on %s: %v", path, img, err)
	}
	return string(out)
}

// waitInstall is waitTimeline for workflows: it also ends the wait as soon as the
// machine's workflow has ended without the steps expected up to its end, rather than
// wait out the budget for events that can no longer come.
func waitInstall(t *testing.T, k *kilnServer, v *vm, machine string, steps []step, timeout time.Duration) []event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var exitedAt time.Time
	var evs []event
	var lastErr error
	why := fmt.Sprintf("not within %s", timeout)
	for {
		var err error
		if evs, err = k.events(machine); err != nil {
			lastErr = err
		} else if _, n := matchSteps(evs, steps); n == len(steps) {
			return evs
		} else if e, ok := workflowEndedOtherwise(evs, steps); ok {
			why = fmt.Sprintf("and the workflow has ended: %s", e)
			break
		}
		if exitedAt.IsZero() && (v.exited() || v.stuck() != "") {
			exitedAt = time.Now()
		}
		if !exitedAt.IsZero() && time.Since(exitedAt) > 3*time.Second {
			why = fmt.Sprintf("and QEMU exited %.1fs after start", exitedAt.Sub(v.started).Seconds())
			if s := v.stuck(); s != "" {
				why = fmt.Sprintf("and the firmware gave up (%q) %.1fs after QEMU start", s, exitedAt.Sub(v.started).Seconds())
			}
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if lastErr != nil {
		why += fmt.Sprintf(" (last events error: %v)", lastErr)
	}
	_, n := matchSteps(evs, steps)
	t.Fatalf("machine %s: timeline lacks step %d of %d, %v, %s\ntimeline:\n%s",
		machine, n+1, len(steps), steps[n], why, formatTimeline(withoutLogs(evs)))
	return nil
}

func workflowEnd(typ string) bool {
	return typ == "WorkflowSucceeded" || typ == "WorkflowFailed" || typ == "WorkflowTimedOut"
}

// workflowEndedOtherwise returns the event that ended the machine's workflow if the
// steps up to the workflow's expected end did not all happen by then.
func workflowEndedOtherwise(evs []event, steps []step) (event, bool) {
	end := -1
	for i, e := range evs {
		if workflowEnd(e.Type) {
			end = i
			break
		}
	}
	if end < 0 {
		return event{}, false
	}
	want := len(steps)
	for i, s := range steps {
		if workflowEnd(s.Type) {
			want = i + 1
			break
		}
	}
	if _, n := matchSteps(evs[:end+1], steps[:want]); n == want {
		return event{}, false
	}
	return evs[end], true
}
