package e2e

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// Issue 15 end to end: a UEFI VM whose TPM is a real swtpm (QEMU's tpm-crb, so OVMF
// measures the boot into it and hands the kernel the TCG event log) netboots the
// agent over HTTPS and enrolls with spec.enrollment: tpm: credential activation on
// its pinned EK, a quote over Kiln's nonce, the event log replayed. The first boot
// sets the profile's measured-boot baseline. Then a second VM with another swtpm but
// the same MAC is refused as the machine (its EK is not the pinned one), with an
// alert, even though it holds the machine's per-boot token and address.

const (
	tpmMachine = "tpm-1"
	tpmMAC     = "52:54:00:e2:15:01"
	tpmSecret  = "tpm-secret"
	// tpmSecretFile is the config file that inlines the secret; the workflow writes
	// what the agent fetched (over mTLS) to the VM's disk, which the test reads.
	tpmSecretFile = "secret.conf"
)

func tpmManifest(agentArtifacts, ekPin string) string {
	return agentArtifacts + "---\n" + labSubnetManifest("e2e") + fmt.Sprintf(`---
kind: Template
metadata: {name: e2e-tpm}
spec:
  timeout: 5m
  actions:
    - {name: hello, type: exec, timeout: 1m, args: {command: "echo attested"}}
    - name: secret
      type: write-file
      timeout: 1m
      args: {device: /dev/vda, fsType: ext4, path: /%[5]s, url: /config/files/%[5]s}
    - {name: off, type: poweroff}
---
kind: Profile
metadata: {name: e2e-tpm}
spec:
  boot:
    agent: true
    cmdline: "console=ttyS0 panic=-1 quiet"
  workflow: e2e-tpm
  enrollment: tpm
  secrets: [%[3]s]
  configs:
    files:
      %[5]s: 'secret={{ secret "%[3]s" }}'
---
kind: Secret
metadata: {name: %[3]s}
spec: {machines: [%[1]s], attested: true, attestedWithin: 15m}
---
kind: Machine
metadata: {name: %[1]s}
spec:
  profile: e2e-tpm
  tpm: {ekSHA256: %[4]s}
  interfaces:
    - {name: eth0, mac: "%[2]s"}
`, tpmMachine, tpmMAC, tpmSecret, ekPin, tpmSecretFile)
}

// tpmVM boots a UEFI VM with swtpm state as its TPM and, as its disk, an empty
// ext4 filesystem (the workflow writes the fetched secret to it).
func tpmVM(t *testing.T, l *lab, k *kilnServer, name, state string) *vm {
	sock := testkit.StartSWTPMForQEMU(t, state)
	extra := append(firmwareTrusts(k.bootCASigList()),
		"-chardev", "socket,id=chrtpm,path="+sock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0")
	disk := blankDisk(t, l, name+".img", 16<<20, nil)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "kiln-secret", disk).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v\n%s", disk, err, out)
	}
	return startVM(t, l, vmConfig{Name: name, MAC: tpmMAC, Firmware: firmwareUEFI, MemoryMB: 512, Timeout: 5 * time.Minute, Extra: extra, Disks: []string{disk}})
}

func TestTPMEnrollmentVM(t *testing.T) {
	l := newLab(t)
	requireInstall(t)
	requireFiles(t, filepath.Join(trixieIPXEDir, "ipxe.efi"))
	requireTools(t, "swtpm", "swtpm_setup", "mkfs.ext4", "debugfs")
	started := time.Now()
	vendor := testkit.NewSWTPMCA(t)
	stateA, stateB := vendor.Manufacture(t), vendor.Manufacture(t)
	k := startKiln(t, l, kilnOptions{dhcp: true, https: true, ipxeDirs: []string{trixieIPXEDir, "/usr/lib/ipxe"},
		extra: []string{"--boot-https", "efi", "--tpm-ek-roots", vendor.RootsDir(t)}})
	agent := buildAgentEnv(t, k)
	k.apply(tpmManifest(agent, testkit.EKPin(t, stateA)))
	secretValue := "tpm-only-" + rand.Text()
	secretPath := filepath.Join(l.dir, "tpm-secret.value")
	if err := os.WriteFile(secretPath, []byte(secretValue), 0o600); err != nil {
		t.Fatal(err)
	}
	k.cli("secret", "set", tpmSecret, "--from-file", secretPath)
	k.cli("machine", "reprovision", tpmMachine, "--no-power")

	// The machine with its own TPM: attested, enrolled, provisioned.
	vA := tpmVM(t, l, k, "tpm-a", stateA)
	evs := waitInstall(t, k, vA, tpmMachine, []step{
		{"BootScript", []string{"served install script", tpmMAC}},
		{"Enrolled", []string{"TPM EK", "attested (measured boot: ok)"}},
		{"WorkflowSucceeded", []string{"machine is provisioned"}},
	}, 4*time.Minute)
	t.Logf("machine %s timeline:\n%s", tpmMachine, formatTimeline(withoutLogs(evs)))
	var m struct {
		Status struct {
			TPM struct {
				EKSHA256     string     `json:"ekSHA256"`
				Attestation  string     `json:"attestation"`
				LastQuoteAt  *time.Time `json:"lastQuoteAt"`
				Measurements struct {
					PCRs             map[string]string `json:"pcrs"`
					BootApplications []string          `json:"bootApplications"`
					Kernel, Initrd   string
					KernelArtifact   string `json:"kernelArtifact"`
					SecureBoot       bool   `json:"secureBoot"`
				} `json:"measurements"`
			} `json:"tpm"`
		} `json:"status"`
	}
	if err := k.getJSON("/api/v1/machines/"+tpmMachine, &m); err != nil {
		t.Fatal(err)
	}
	tpm := m.Status.TPM
	if tpm.Attestation != "ok" || tpm.LastQuoteAt == nil || tpm.EKSHA256 != testkit.EKPin(t, stateA) {
		t.Fatalf("status.tpm = %+v, want ok, a quote time and TPM A's EK", tpm)
	}
	// OVMF measured the firmware and the EFI applications it started (iPXE, then the
	// kernel's EFI stub) into the real PCRs, and the log replayed to them.
	if len(tpm.Measurements.BootApplications) < 2 || tpm.Measurements.PCRs["0"] == strings.Repeat("0", 64) {
		t.Errorf("measurements %+v: want PCR 0 extended and at least iPXE and the kernel in PCR 4", tpm.Measurements)
	}
	t.Logf("measured: boot applications %v, kernel %s (%s), initrd %q, secure boot %t", tpm.Measurements.BootApplications, tpm.Measurements.Kernel,
		tpm.Measurements.KernelArtifact, tpm.Measurements.Initrd, tpm.Measurements.SecureBoot)
	// The kernel the firmware measured is, by its Authenticode digest, the one Kiln
	// served: the expected value derived from Kiln's own artifact, not learned.
	if tpm.Measurements.KernelArtifact != "kernel kiln-agent-kernel" {
		t.Errorf("status.tpm.measurements.kernelArtifact = %q, want the agent kernel Kiln served", tpm.Measurements.KernelArtifact)
	}
	// The attested machine got its secret: the agent fetched the config that
	// inlines it over mTLS and wrote it to the VM's disk.
	for deadline := time.Now().Add(time.Minute); !vA.exited() && time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond) // the workflow's poweroff: the disk is written
	}
	if got := readExt4File(t, filepath.Join(l.dir, "tpm-a.img"), 0, "/"+tpmSecretFile); got != "secret="+secretValue {
		t.Errorf("the attested VM wrote %q to its disk, want the secret's config", got)
	}
	if desc := k.cli("describe", "machine", tpmMachine); !strings.Contains(desc, "Attestation:       ok (last quote: ") {
		t.Errorf("kiln describe machine shows no attestation:\n%s", desc)
	}

	// Another VM, another TPM, the same MAC: it gets the machine's address, its
	// script and per-boot token, and is refused because its EK is not the pinned one.
	k.cli("machine", "reprovision", tpmMachine, "--no-power")
	vB := tpmVM(t, l, k, "tpm-b", stateB)
	evs = waitTimeline(t, k, vB, tpmMachine, []step{
		{"WorkflowSucceeded", []string{"machine is provisioned"}},
		{"EnrollAlert", []string{"TPM EK " + testkit.EKPin(t, stateB), "is not the pinned " + testkit.EKPin(t, stateA)}},
	}, 4*time.Minute)
	for _, e := range evs {
		if e.Type == "Enrolled" && e.Time.After(vB.started) {
			t.Errorf("the second TPM enrolled as the machine: %s", e)
		}
	}
	var audit struct {
		Items []struct{ Action, Name, Summary string } `json:"items"`
	}
	if err := json.Unmarshal([]byte(k.cli("audit", "list", "-o", "json", "--limit", "1000")), &audit); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit.Items {
		found = found || e.Action == "enroll-alert" && e.Name == tpmMachine && strings.Contains(e.Summary, "is not the pinned")
	}
	if !found {
		t.Error("no enroll-alert audit entry for the second TPM")
	}

	// The machine with its own TPM boots another initrd (the agent environment built
	// again with one more module, applied as the same artifact): PCR 9 differs from
	// the baseline its first boot set. enforce: no certificate, status.tpm failed
	// (secrets with attested: true are refused to its older certificate too).
	stopVM(vB) // its agent, refused, would retry until the VM's timeout
	k.apply(buildAgentEnvWith(t, k, "agent-other", agentModules+",e1000"))
	k.cli("machine", "reprovision", tpmMachine, "--no-power")
	vC := tpmVM(t, l, k, "tpm-a-other-initrd", stateA)
	waitTimeline(t, k, vC, tpmMachine, []step{
		{"EnrollAlert", []string{"TPM EK " + testkit.EKPin(t, stateB)}},
		{"EnrollAlert", []string{"measured boot differs", "pcr 9 changed from"}},
	}, 4*time.Minute)
	if err := k.getJSON("/api/v1/machines/"+tpmMachine, &m); err != nil {
		t.Fatal(err)
	}
	if m.Status.TPM.Attestation != "failed" {
		t.Errorf("status.tpm.attestation after the other initrd under enforce = %q, want failed", m.Status.TPM.Attestation)
	}
	stopVM(vC)

	// warn: the same boot is enrolled, with an AttestationAlert naming PCR 9.
	k.apply(strings.Replace(tpmManifest(agentOther(t, k), testkit.EKPin(t, stateA)), "  enrollment: tpm\n", "  enrollment: tpm\n  attestation: warn\n", 1))
	k.cli("machine", "reprovision", tpmMachine, "--no-power")
	vD := tpmVM(t, l, k, "tpm-a-warn", stateA)
	waitTimeline(t, k, vD, tpmMachine, []step{
		{"EnrollAlert", []string{"measured boot differs"}},
		{"AttestationAlert", []string{"pcr 9 changed from", "attestation: warn"}},
		{"Enrolled", []string{"attested (measured boot: warned)"}},
	}, 4*time.Minute)
	t.Logf("TPM e2e took %s", time.Since(started).Round(time.Second))
}

// buildAgentEnvWith builds the agent environment into artifacts/DIR with modules
// and returns its Artifact manifest (the same artifact names: applied, it replaces
// what profiles with boot.agent boot).
func buildAgentEnvWith(t *testing.T, k *kilnServer, dir, modules string) string {
	t.Helper()
	cmd := exec.Command(staticKiln(t), "image", "build",
		"--kernel", filepath.Join(assetDir, "vmlinuz"),
		"--modules-dir", filepath.Join(assetDir, "modules"),
		"--modules", modules,
		"--compression", "zstd",
		"--out", filepath.Join(k.artifactDir, dir),
		"--no-progress")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kiln image build: %v\n%s", err, out)
	}
	return string(out)
}

// agentOther is the manifest of the environment buildAgentEnvWith made in
// artifacts/agent-other (built again: the build is reproducible, so the same).
func agentOther(t *testing.T, k *kilnServer) string {
	return buildAgentEnvWith(t, k, "agent-other", agentModules+",e1000")
}

// stopVM ends a VM that is still running (an agent refused keeps retrying) and
// waits until its swtpm, which ends with QEMU, can be started again.
func stopVM(v *vm) {
	v.stop()
}
