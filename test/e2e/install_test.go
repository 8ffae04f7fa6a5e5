package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// End to end: install an OS onto a disk and boot into it.
//
// A BIOS VM netboots Kiln's agent environment (built from this tree by kiln image
// build), enrolls with its per-boot token, and runs its machine's workflow:
//
//	data-disk       partition   GPT with one partition "kiln-data" on the data disk
//	                            (/dev/vdb): the installed system's scratch space
//	image           image2disk  the boot disk image onto /dev/vda, sha256-checked: its
//	                            own GPT (kiln-boot FAT with SYSLINUX, kiln-root ext4)
//	                            and gptmbr.bin (scripts/e2e-assets.sh builds it)
//	machine-name    write-file  /kiln/machine-name = {{ .Machine.Name }} on kiln-root
//	phone-home-url  write-file  /kiln/phone-home-url on kiln-root
//	reboot          reboot
//
// The image carries its own partition table, so it is written first and the files
// go into its root partition by GPT name; a partition action on that disk would
// replace the image's table and its boot code, so it partitions the second disk.
// The workflow's success makes the machine provisioned; the reboot netboots again,
// gets the local-disk script (iPXE exits), and SeaBIOS boots the disk: gptmbr.bin,
// SYSLINUX, the kernel and the installed system's initramfs, which mounts kiln-root
// and phones home with the content of the file the workflow wrote.

const (
	installProfile  = "e2e-install"
	installTemplate = "e2e-install"
	diskArtifactRef = "e2e-disk"
	// installBudget bounds waiting for the whole install timeline (two boots under
	// TCG); QEMU is killed a little later.
	installBudget = 5 * time.Minute
)

// labSubnetManifest is the lab's subnet as a manifest named name: full DHCP on the
// bridge, a pool of 50 addresses, Kiln as router and boot server, unknown machines
// ignored.
func labSubnetManifest(name string) string {
	return fmt.Sprintf(`kind: Subnet
metadata: {name: %[1]s}
spec:
  cidr: 10.77.0.0/24
  mode: full
  pools:
    - {start: 10.77.0.100, end: 10.77.0.149}
  router: %[2]s
  leaseTime: 1h
  bootServer: %[2]s
  interfaces: [%[3]s]
  unknownMachines: ignore
`, name, kilnIP, bridgeName)
}

// installManifest is the subnet (full DHCP), the artifacts (the agent environment
// kiln image build printed, the disk image), the install template, the profile that
// boots the agent with it, and extra (machines, more artifacts and templates).
func installManifest(agentArtifacts, diskSource, diskSum string, diskSize int64, extra string) string {
	return agentArtifacts + "---\n" + labSubnetManifest("e2e") + fmt.Sprintf(`---
kind: Artifact
metadata: {name: %[3]s}
spec: {source: %[4]s, sha256: %[5]s, size: %[6]d, arch: x86_64}
---
kind: Template
metadata: {name: %[7]s}
spec:
  timeout: 10m
  actions:
    - name: data-disk
      type: partition
      timeout: 1m
      args:
        disk: /dev/vdb
        partitions:
          - {label: kiln-data, size: rest}
    - name: image
      type: image2disk
      timeout: 3m
      args: {image: %[3]s, disk: /dev/vda, compression: zstd}
    - name: machine-name
      type: write-file
      timeout: 1m
      args:
        partitionLabel: kiln-root
        fsType: ext4
        path: /kiln/machine-name
        content: "{{ .Machine.Name }}\n"
    - name: phone-home-url
      type: write-file
      timeout: 1m
      args:
        partitionLabel: kiln-root
        fsType: ext4
        path: /kiln/phone-home-url
        content: "%[8]s\n"
    - name: reboot
      type: reboot
---
kind: Profile
metadata: {name: %[9]s}
spec:
  description: installs the e2e disk image with Kiln's agent, then boots it from disk
  boot:
    agent: true
    cmdline: "console=ttyS0 panic=-1 quiet"
  workflow: %[7]s
`, kilnIP, bridgeName, diskArtifactRef, diskSource, diskSum, diskSize, installTemplate, kilnURL, installProfile) + extra
}

// installMachine is a machine of the install profile with a reserved address.
func installMachine(name, mac, ip string) string {
	return fmt.Sprintf(`---
kind: Machine
metadata: {name: %s, labels: {e2e: "true"}}
spec:
  profile: %s
  interfaces:
    - {name: eth0, mac: "%s", ip: %s}
`, name, installProfile, mac, ip)
}

// agentSteps: the machine netboots the agent environment and enrolls.
func agentSteps(mac, ip string) []step {
	return []step{
		{"DHCPAck", []string{ip}},
		{"BootScript", []string{"served install script", mac, "pcbios"}},
		{"ArtifactFetched", []string{"kiln-agent-kernel:"}},
		{"ArtifactFetched", []string{"kiln-agent-initrd:"}},
		// The agent's CSR carries its connection's channel binding (one handshake).
		{"Enrolled", []string{"enrolled", "bound to its TLS connection"}},
	}
}

// stateWatch records a machine's distinct states, polled twice a second.
type stateWatch struct {
	mu     sync.Mutex
	states []string
	stop   func()
}

func watchState(k *kilnServer, name string) *stateWatch {
	w := &stateWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	w.stop = func() { cancel(); <-done }
	go func() {
		defer close(done)
		for {
			var m struct {
				Status struct {
					State string `json:"state"`
				} `json:"status"`
			}
			if k.getJSON("/api/v1/machines/"+name, &m) == nil {
				w.mu.Lock()
				if n := len(w.states); n == 0 || w.states[n-1] != m.Status.State {
					w.states = append(w.states, m.Status.State)
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *stateWatch) seen() []string {
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.states...)
}

// TestInstallToDiskAndBoot: reprovision a machine, let it netboot the agent, run the
// install workflow (partition, image2disk, write-file, reboot) and boot the installed
// disk, which phones home with what the workflow wrote into it.
func TestInstallToDiskAndBoot(t *testing.T) {
	l := newLab(t)
	requireInstall(t)
	requireTools(t, "sfdisk", "debugfs")
	k := startInstallKiln(t, l)
	agent := buildAgentEnv(t, k)
	src, sum, size := diskArtifact(t, k)
	const name, mac, ip = "install-1", "52:54:00:e2:e0:10", "10.77.0.31"
	k.apply(installManifest(agent, src, sum, size, installMachine(name, mac, ip)))

	out := k.cli("machine", "reprovision", name, "--no-power")
	t.Logf("kiln machine reprovision %s --no-power: %s", name, strings.TrimSpace(out))
	if st := k.machineState(name); st != "provisioning" {
		t.Fatalf("after reprovision, machine %s is %q, want provisioning", name, st)
	}
	watch := watchState(k, name)

	boot := blankDisk(t, l, "boot-disk.img", 256<<20, nil)
	data := blankDisk(t, l, "data-disk.img", 64<<20, nil)
	v := startInstallVM(t, l, name, mac, []string{boot, data}, installBudget+time.Minute)

	steps := append([]step{{"WorkflowCreated", []string{"template " + installTemplate, "5 actions"}}}, agentSteps(mac, ip)...)
	steps = append(steps,
		step{"ActionSucceeded", []string{"data-disk in "}},
		step{"ActionSucceeded", []string{"image in "}},
		step{"ActionSucceeded", []string{"machine-name in "}},
		step{"ActionSucceeded", []string{"phone-home-url in "}},
		step{"ActionSucceeded", []string{"reboot in "}},
		step{"WorkflowSucceeded", []string{"all actions succeeded", "machine is provisioned"}},
		step{"BootScript", []string{"served local-disk script", mac, "pcbios"}},
		// The installed system's phone-home: from the disk (SYSLINUX's BOOT_IMAGE), with
		// both partitions found by name and the file the workflow wrote.
		step{"PhoneHome", []string{mac + " phoned home from " + ip, "booted from disk", "root=vda2", "boot_image=/vmlinuz", "data=vdb1", "machine-name=" + name}},
	)
	evs := waitInstall(t, k, v, name, steps, installBudget)
	idx, _ := matchSteps(evs, steps)
	for i := 1; i < len(idx); i++ {
		if evs[idx[i]].Time.Before(evs[idx[i-1]].Time) {
			t.Errorf("machine %s: %s recorded before %s", name, evs[idx[i]], evs[idx[i-1]])
		}
	}
	states := watch.seen()

	// The second boot took nothing from Kiln but its local-disk script and an address:
	// no kernel, no enrollment.
	provisioned := idx[len(idx)-3]
	for _, e := range evs[provisioned+1:] {
		switch e.Type {
		case "ArtifactFetched", "Enrolled", "ActionStarted", "BootScriptFailed":
			t.Errorf("after the workflow succeeded: %s", e)
		}
	}
	installs := 0
	for _, e := range evs {
		if e.Type == "BootScript" && strings.Contains(e.Message, "served install script") {
			installs++
		}
	}
	if installs != 1 {
		t.Errorf("%d install scripts served, want 1 (the agent booted again?)", installs)
	}

	// The workflow as the API reports it: every action succeeded, in order.
	wf := k.machineWorkflow(name)
	want := []struct{ name, typ, msg string }{
		{"data-disk", "partition", "GPT on /dev/vdb: kiln-data"},
		{"image", "image2disk", "sha256 verified"},
		{"machine-name", "write-file", "wrote /kiln/machine-name on /dev/vda2"},
		{"phone-home-url", "write-file", "wrote /kiln/phone-home-url on /dev/vda2"},
		{"reboot", "reboot", ""},
	}
	if wf.Status.State != "succeeded" || len(wf.Status.Actions) != len(want) {
		t.Fatalf("workflow %s: state %q (%s), %d actions; want succeeded with %d", wf.Name, wf.Status.State, wf.Status.Message, len(wf.Status.Actions), len(want))
	}
	for i, w := range want {
		a := wf.Status.Actions[i]
		if a.Name != w.name || a.Type != w.typ || a.State != "succeeded" || a.Attempts != 1 || !strings.Contains(a.Message, w.msg) {
			t.Errorf("workflow %s action %d: %s (%s) %s after %d attempts: %q; want %s (%s) succeeded at once, message with %q",
				wf.Name, i, a.Name, a.Type, a.State, a.Attempts, a.Message, w.name, w.typ, w.msg)
		}
	}
	// No --public-url: Kiln rendered the image's URL as a path, the agent resolved it
	// against the URL it enrolled at.
	if u := wf.Status.Actions[1].Args["imageURL"]; u != "/artifacts/"+diskArtifactRef {
		t.Errorf("action image: args.imageURL %v, want the path /artifacts/%s", u, diskArtifactRef)
	}
	if st := k.machineState(name); st != "provisioned" {
		t.Errorf("machine %s ends %q, want provisioned", name, st)
	}
	if strings.Join(states, " ") != "provisioning provisioned" {
		t.Errorf("machine %s went through states %q, want provisioning then provisioned", name, states)
	}

	// SeaBIOS booted the disk: SYSLINUX's banner and the installed system's lines.
	for _, s := range []string{"SYSLINUX is booting the installed system from the local disk", "kiln-e2e-disk: phoned home"} {
		if !v.serialContains(s) {
			t.Errorf("serial console lacks %q", s)
		}
	}
	// It powers off after phoning home.
	select {
	case <-v.done:
	case <-time.After(20 * time.Second):
		t.Errorf("the installed system did not power off after phoning home")
	}

	// The disks as another reader sees them: the image's table on the boot disk with
	// the files the workflow wrote in kiln-root, the partition action's on the data disk.
	parts := readGPT(t, boot)
	if len(parts) != 2 || parts[0].Name != "kiln-boot" || !strings.Contains(parts[0].Attrs, "LegacyBIOSBootable") || parts[1].Name != "kiln-root" {
		t.Errorf("boot disk partitions %+v, want the image's kiln-boot (legacy BIOS bootable) and kiln-root", parts)
	} else {
		for file, want := range map[string]string{"/kiln/machine-name": name + "\n", "/kiln/phone-home-url": kilnURL + "\n"} {
			if got := readExt4File(t, boot, parts[1].Start, file); got != want {
				t.Errorf("%s on kiln-root holds %q, want %q", file, got, want)
			}
		}
	}
	if parts := readGPT(t, data); len(parts) != 1 || parts[0].Name != "kiln-data" || parts[0].Type != "0FC63DAF-8483-4772-8E79-3D69D8477DE4" || parts[0].Start != 2048 {
		t.Errorf("data disk partitions %+v, want one Linux partition kiln-data at 1 MiB", parts)
	}

	start := v.started
	at := func(i int) string { return fmt.Sprintf("%5.1fs", evs[idx[i]].Time.Sub(start).Seconds()) }
	t.Logf("machine %s installed and booted from disk: states %v; from QEMU start: agent booted (kernel fetched) %s, enrolled %s, image written %s, workflow succeeded %s, local-disk script %s, phone-home from disk %s",
		name, states, at(3), at(5), at(7), at(11), at(12), at(13))
	t.Logf("workflow %s:\n%s\ntimeline:\n%s", wf.Name, describeActions(wf), formatTimeline(withoutLogs(evs)))
	k.demoShow(name)
	demoAppend(k, v, name)
}

// TestInstallBadImageHashFails: the image's Artifact records a sha256 the served bytes
// do not have (a mirror serving something else than what was recorded). image2disk
// writes the stream, finds the mismatch, wipes the disk's ends so nothing half-trusted
// can boot, and fails; the workflow fails and so does the machine.
func TestInstallBadImageHashFails(t *testing.T) {
	l := newLab(t)
	requireInstall(t)
	k := startInstallKiln(t, l)
	agent := buildAgentEnv(t, k)
	src, sum, size := diskArtifact(t, k)
	const name, mac, ip = "install-bad", "52:54:00:e2:e0:11", "10.77.0.32"
	wrong := sha256.Sum256([]byte("not the e2e disk image"))
	wrongSum := hex.EncodeToString(wrong[:])
	// The same image through another URL (Kiln's own artifact URL stands in for a
	// mirror), recorded with the wrong sha256: Kiln hands the agent the URL and that
	// sha256, and only the agent can tell.
	extra := fmt.Sprintf(`---
kind: Artifact
metadata: {name: e2e-disk-mirror}
spec: {source: "%s/artifacts/%s", sha256: %s, arch: x86_64}
---
kind: Template
metadata: {name: e2e-install-mirror}
spec:
  timeout: 5m
  actions:
    - name: image
      type: image2disk
      timeout: 3m
      args: {image: e2e-disk-mirror, disk: /dev/vda, compression: zstd}
    - name: reboot
      type: reboot
`, kilnURL, diskArtifactRef, wrongSum) + installMachine(name, mac, ip)
	k.apply(installManifest(agent, src, sum, size, extra))
	t.Logf("kiln machine reprovision: %s", strings.TrimSpace(k.cli("machine", "reprovision", name, "--template", "e2e-install-mirror", "--no-power")))

	// The disk holds an earlier system: the boot sector TestNetbootProvisionedBootsLocalDisk boots.
	boot := blankDisk(t, l, "boot-disk.img", 256<<20, bootSector())
	v := startInstallVM(t, l, name, mac, []string{boot}, 4*time.Minute)
	steps := append([]step{{"WorkflowCreated", []string{"template e2e-install-mirror", "2 actions"}}}, agentSteps(mac, ip)...)
	steps = append(steps,
		step{"ActionFailed", []string{"action image failed", "sha256 mismatch", "the download is " + sum, "expected " + wrongSum}},
		step{"WorkflowFailed", []string{"machine is failed"}},
	)
	evs := waitInstall(t, k, v, name, steps, 3*time.Minute)

	wf := k.machineWorkflow(name)
	if wf.Status.State != "failed" || len(wf.Status.Actions) != 2 {
		t.Fatalf("workflow %s: state %q, %d actions; want failed with 2", wf.Name, wf.Status.State, len(wf.Status.Actions))
	}
	img, rb := wf.Status.Actions[0], wf.Status.Actions[1]
	wantMsg := fmt.Sprintf("sha256 mismatch: the download is %s, expected %s", sum, wrongSum)
	if img.State != "failed" || img.Message != wantMsg {
		t.Errorf("action image: %s %q; want failed %q", img.State, img.Message, wantMsg)
	}
	if !strings.Contains(strings.Join(img.Log, "\n"), "wiped the first and last MiB of /dev/vda") {
		t.Errorf("action image's log does not say the disk was wiped:\n%s", strings.Join(img.Log, "\n"))
	}
	if rb.State != "pending" {
		t.Errorf("action reboot is %s after the image failed, want pending", rb.State)
	}
	if st := k.machineState(name); st != "failed" {
		t.Errorf("machine %s is %q, want failed", name, st)
	}
	// The disk's first MiB (partition table, boot code) is zeroes: neither the earlier
	// system nor the rejected image can boot.
	f, err := os.Open(boot)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 1<<20)
	_, err = f.ReadAt(head, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head, make([]byte, len(head))) {
		t.Errorf("the first MiB of the disk is not zeroes after the failed image2disk")
	}
	t.Logf("workflow %s:\n%s\ntimeline:\n%s", wf.Name, describeActions(wf), formatTimeline(withoutLogs(evs)))
}

func describeActions(wf workflowView) string {
	var b strings.Builder
	for _, a := range wf.Status.Actions {
		fmt.Fprintf(&b, "  %-15s %-11s %-9s %s\n", a.Name, a.Type, a.State, a.Message)
	}
	return strings.TrimRight(b.String(), "\n")
}

// withoutLogs leaves out the agent's log lines (kiln logs machine shows them).
func withoutLogs(evs []event) []event {
	var out []event
	for _, e := range evs {
		if e.Type != "AgentLog" {
			out = append(out, e)
		}
	}
	return out
}

// demoAppend adds to `make demo`'s output what demoShow does not show: the agent's
// log lines and what the installed system printed on its console.
func demoAppend(k *kilnServer, v *vm, machine string) {
	path := os.Getenv("KILN_DEMO")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		k.t.Fatal(err)
	}
	defer f.Close()
	args := []string{"logs", "machine", machine, "--tail", "30"}
	fmt.Fprintf(f, "\n$ kiln %s\n%s", strings.Join(args, " "), k.cli(args...))
	b, _ := os.ReadFile(v.serial)
	fmt.Fprintf(f, "\n# The VM's serial console after the reboot: SeaBIOS booted the disk (SYSLINUX), the\n# installed system read what the workflow wrote and phoned home.\n")
	for _, line := range strings.Split(string(stripANSI(b)), "\n") {
		if strings.Contains(line, "SYSLINUX") || strings.Contains(line, "kiln-e2e") {
			fmt.Fprintln(f, line)
		}
	}
}
