package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The example fleet (examples/) with make demo's assets, as examples/README.md tells
// an operator to run it: the disk image at the relative source the examples name
// (install/disk.img.zst below the artifact directory), the agent's environment built
// into the artifact directory with kiln image build, the image's sha256 pinned, and
// the example's own machine web-1 (its MAC) netbooting through its own profile and
// template. Only the network is the lab's: the examples' subnet is 10.20.0.0/24 on
// eth1, so a second Subnet serves the lab's bridge, and web-1, whose reserved address
// is outside it, gets one from the lab's pool.

const (
	// examplesDir is the example fleet, applied unchanged.
	examplesDir = "../../examples/"
	// The example machine booted here, with the MAC examples/machines.yaml gives it.
	exampleMachine = "web-1"
	exampleMAC     = "52:54:00:12:34:01"
	// exampleDiskSize is the VM's disk: the example template picks the smallest
	// disk of at least 16 GB. Sparse: only the image's bytes are written.
	exampleDiskSize = 20 << 30
)

// examplesOverlay is what the README adds to examples/ on the lab: debian-12-image
// with its sha256 pinned (the same sed the README gives, done here with
// strings.Replace), and the lab's subnet.
func examplesOverlay(t *testing.T, diskSum string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examplesDir, "artifacts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const source = "\n  source: " + installDiskAsset + "\n"
	pinned := strings.Replace(string(b), source, source+"  sha256: "+diskSum+"\n", 1)
	if pinned == string(b) {
		t.Fatalf("examples/artifacts.yaml has no artifact with source %s (make demo's disk image)", installDiskAsset)
	}
	return pinned + "---\n" + labSubnetManifest("e2e-lab")
}

// TestExamplesInstallWeb1: apply examples/, reprovision web-1 and let it netboot the
// agent, run the example template (image2disk, write-file /etc/hostname, reboot) and
// boot the installed disk; web-1 ends provisioned with its hostname in the image.
func TestExamplesInstallWeb1(t *testing.T) {
	l := newLab(t)
	requireInstall(t)
	requireTools(t, "sfdisk", "debugfs")
	k := startInstallKiln(t, l)
	agent := buildAgentEnv(t, k)
	source, sum, _ := diskArtifact(t, k)
	if source != installDiskAsset {
		t.Fatalf("the disk image is at %s in the artifact directory, the examples name %s", source, installDiskAsset)
	}

	// In the README's order: the agent's Artifacts (kiln image build's output, as
	// --apply applies them), then examples/, which then warns about nothing.
	k.apply(agent)
	out := k.cli("apply", "-f", examplesDir)
	t.Logf("kiln apply -f examples/:\n%s", strings.TrimSpace(out))
	if !strings.Contains(out, "machine/"+exampleMachine+" created") || strings.Contains(out, "Warning") {
		t.Fatalf("kiln apply -f examples/ after kiln image build: want %s created and no warning:\n%s", exampleMachine, out)
	}
	k.apply(examplesOverlay(t, sum))

	// Everything the machine's boot and workflow need is there: no warning.
	out = k.cli("machine", "reprovision", exampleMachine, "--no-power")
	t.Logf("kiln machine reprovision %s --no-power: %s", exampleMachine, strings.TrimSpace(out))
	if strings.Contains(out, "Warning") {
		t.Errorf("reprovision of %s with the demo's assets in place warned:\n%s", exampleMachine, out)
	}
	if st := k.machineState(exampleMachine); st != "provisioning" {
		t.Fatalf("after reprovision, machine %s is %q, want provisioning", exampleMachine, st)
	}

	disk := blankDisk(t, l, "web-1-disk.img", exampleDiskSize, nil)
	v := startInstallVM(t, l, exampleMachine, exampleMAC, []string{disk}, installBudget+time.Minute)
	steps := []step{
		{"WorkflowCreated", []string{"template install-debian-12", "3 actions"}},
		// From the lab's pool: the reservation (10.20.0.11) is the examples' network's.
		{"DHCPAck", []string{"leased 10.77.0.1", "on subnet e2e-lab"}},
		{"BootScript", []string{"served install script", exampleMAC}},
		{"ArtifactFetched", []string{"kiln-agent-kernel:"}},
		{"ArtifactFetched", []string{"kiln-agent-initrd:"}},
		{"Enrolled", []string{"enrolled"}},
		{"ActionSucceeded", []string{"stream-image in "}},
		{"ActionSucceeded", []string{"hostname in "}},
		{"ActionSucceeded", []string{"reboot in "}},
		{"WorkflowSucceeded", []string{"all actions succeeded", "machine is provisioned"}},
		{"BootScript", []string{"served local-disk script", exampleMAC}},
	}
	evs := waitInstall(t, k, v, exampleMachine, steps, installBudget)

	wf := k.machineWorkflow(exampleMachine)
	want := []struct{ name, typ, msg string }{
		{"stream-image", "image2disk", "sha256 verified"},
		{"hostname", "write-file", "wrote /etc/hostname on /dev/vda2"},
		{"reboot", "reboot", ""},
	}
	if wf.Status.State != "succeeded" || len(wf.Status.Actions) != len(want) {
		t.Fatalf("workflow %s: state %q (%s), %d actions; want succeeded with %d", wf.Name, wf.Status.State, wf.Status.Message, len(wf.Status.Actions), len(want))
	}
	for i, w := range want {
		a := wf.Status.Actions[i]
		if a.Name != w.name || a.Type != w.typ || a.State != "succeeded" || !strings.Contains(a.Message, w.msg) {
			t.Errorf("workflow %s action %d: %s (%s) %s: %q; want %s (%s) succeeded, message with %q", wf.Name, i, a.Name, a.Type, a.State, a.Message, w.name, w.typ, w.msg)
		}
	}
	if st := k.machineState(exampleMachine); st != "provisioned" {
		t.Errorf("machine %s ends %q, want provisioned", exampleMachine, st)
	}

	// After the reboot SeaBIOS booted the installed disk (the demo image's SYSLINUX
	// and system; it powers off, finding none of the install test's /kiln files).
	deadline := time.Now().Add(90 * time.Second)
	for !v.serialContains("kiln-e2e-disk: booted from the local disk") && time.Now().Before(deadline) && !v.exited() {
		time.Sleep(500 * time.Millisecond)
	}
	for _, s := range []string{"SYSLINUX is booting the installed system from the local disk", "kiln-e2e-disk: booted from the local disk"} {
		if !v.serialContains(s) {
			t.Errorf("serial console lacks %q: the installed disk did not boot", s)
		}
	}
	select {
	case <-v.done:
	case <-time.After(30 * time.Second):
		t.Errorf("the installed system did not power off")
	}

	// The disk as another reader sees it: the image's partitions, and the hostname
	// the example template wrote into its root partition.
	parts := readGPT(t, disk)
	if len(parts) != 2 || parts[0].Name != "kiln-boot" || parts[1].Name != "kiln-root" {
		t.Fatalf("disk partitions %+v, want the demo image's kiln-boot and kiln-root", parts)
	}
	if got := readExt4File(t, disk, parts[1].Start, "/etc/hostname"); got != exampleMachine+"\n" {
		t.Errorf("/etc/hostname on kiln-root holds %q, want %q", got, exampleMachine+"\n")
	}
	idx, _ := matchSteps(evs, steps)
	at := func(i int) string { return fmt.Sprintf("%5.1fs", evs[idx[i]].Time.Sub(v.started).Seconds()) }
	t.Logf("example machine %s installed from examples/: from QEMU start: agent kernel fetched %s, enrolled %s, image written %s, provisioned %s, local-disk script %s",
		exampleMachine, at(3), at(5), at(6), at(9), at(10))
	t.Logf("workflow %s:\n%s\ntimeline:\n%s", wf.Name, describeActions(wf), formatTimeline(withoutLogs(evs)))
	k.demoShow(exampleMachine)
}
