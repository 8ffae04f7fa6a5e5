package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/pe"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Secure Boot netboot of Kiln's signed UKI agent (README, "Signed boot chain").
//
// OVMF with Secure Boot on (snakeoil keys) and only its UEFI HTTP boot client gets,
// from Kiln's DHCP, https://KILN:8443/uki/<mac>.efi (the machine's profile has
// spec.boot.uki), downloads the UKI over verified HTTPS (Kiln's boot CA in
// TlsCaCertificate), checks its Authenticode signature against db and starts it:
//   - sb-good: the UKI kiln image build --uki signed with the snakeoil db key. The
//     agent enrolls without a token (the UKI is public, it carries none), the
//     operator approves the request, the workflow (poweroff) runs, the machine is
//     provisioned.
//   - sb-tampered: the same UKI with one byte of the kernel changed, and
//   - sb-otherkey: the same build signed with a key that is not in db:
//     the firmware refuses both ("Access Denied"); Kiln's timeline shows the UKI
//     fetched, no enrollment, and an AgentMissing event naming the image.

const (
	snakeoilKey  = "/usr/share/ovmf/PkKek-1-snakeoil.key" // encrypted, password "snakeoil"
	snakeoilCert = "/usr/share/ovmf/PkKek-1-snakeoil.pem"
	efiStub      = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
	sbTemplate   = "e2e-sb-poweroff"
	// ukiAgentDeadline is --uki-agent-deadline for these scenarios: how long after
	// the download the refused machines are reported. The good machine's agent asks
	// to enroll ~40 s after its download under TCG on a loaded host: twice that.
	ukiAgentDeadline = 90 * time.Second
)

func TestNetbootSecureBootUKI(t *testing.T) {
	l := newLab(t)
	requireInstall(t)
	requireFiles(t, snakeoilKey, snakeoilCert, efiStub, ovmfCodeSecureBoot, ovmfVarsSnakeoil)
	requireTools(t, "objcopy", "openssl")
	k := startKiln(t, l, kilnOptions{dhcp: true, https: true, extra: []string{
		"--boot-https", "efi", "--enroll-approval-without-token", "--uki-agent-deadline", ukiAgentDeadline.String()}})
	sigList := k.bootCASigList()
	fp := strings.TrimSpace(k.cli("ca", "show", "--fingerprint"))

	// The operator's db key: here Debian's snakeoil test key, decrypted into a file
	// only root reads (kiln image build takes no passphrase).
	dbKey := filepath.Join(l.dir, "db.key")
	if out, err := exec.Command("openssl", "pkey", "-in", snakeoilKey, "-passin", "pass:snakeoil", "-out", dbKey).CombinedOutput(); err != nil {
		t.Fatalf("decrypt the snakeoil key: %v\n%s", err, out)
	}
	os.Chmod(dbKey, 0o600)
	otherKey, otherCert := writeRSACert(t, l.dir, "not-in-db")

	cmdline := fmt.Sprintf("console=ttyS0 panic=-1 kiln.server=%s kiln.ca_fingerprint=%s", kilnHTTPSURL, fp)
	agent := buildUKIAgent(t, k, "agent", cmdline, dbKey, snakeoilCert)
	buildUKIAgent(t, k, "agent-otherkey", cmdline, otherKey, otherCert)
	good := filepath.Join(k.artifactDir, "agent", "kiln-agent.efi")
	tampered := filepath.Join(k.artifactDir, "uki-tampered.efi")
	writeTampered(t, good, tampered)

	const (
		goodName, goodMAC, goodIP    = "sb-good", "52:54:00:e2:5b:01", "10.77.0.41"
		tampName, tampMAC, tampIP    = "sb-tampered", "52:54:00:e2:5b:02", "10.77.0.42"
		otherName, otherMAC, otherIP = "sb-otherkey", "52:54:00:e2:5b:03", "10.77.0.43"
	)
	k.apply(agent + "---\n" + labSubnetManifest("e2e") + fmt.Sprintf(`---
kind: Artifact
metadata: {name: uki-tampered}
spec: {source: uki-tampered.efi, arch: x86_64}
---
kind: Artifact
metadata: {name: uki-otherkey}
spec: {source: agent-otherkey/kiln-agent.efi, arch: x86_64}
---
kind: Template
metadata: {name: %[1]s}
spec:
  timeout: 5m
  actions:
    - {name: off, type: poweroff}
---
kind: Profile
metadata: {name: sb-agent}
spec:
  boot: {agent: true, uki: true}
  workflow: %[1]s
  enrollment: approve
---
kind: Profile
metadata: {name: sb-tampered}
spec:
  boot: {agent: true, uki: uki-tampered}
---
kind: Profile
metadata: {name: sb-otherkey}
spec:
  boot: {agent: true, uki: uki-otherkey}
`, sbTemplate) + sbMachine(goodName, goodMAC, goodIP, "sb-agent") + sbMachine(tampName, tampMAC, tampIP, "sb-tampered") + sbMachine(otherName, otherMAC, otherIP, "sb-otherkey"))
	k.cli("machine", "reprovision", goodName, "--no-power")

	vmFor := func(name, mac string) *vm {
		return startVM(t, l, vmConfig{Name: name, MAC: mac, Firmware: firmwareUEFISecureBoot, MemoryMB: 512, Timeout: 5 * time.Minute,
			Extra: append(firmwareTrusts(sigList), httpBootOnly...)})
	}
	start := time.Now()
	vGood := vmFor(goodName, goodMAC)
	vTamp := vmFor(tampName, tampMAC)
	vOther := vmFor(otherName, otherMAC)

	waitInstall(t, k, vGood, goodName, []step{
		{"WorkflowCreated", []string{"template " + sbTemplate}},
		{"DHCPAck", []string{goodIP}},
		{"ArtifactFetched", []string{"kiln-agent-uki:", "over https"}},
	}, 4*time.Minute)
	// The agent asks without a token; the request names no machine (its MAC is
	// sb-good's, which only the operator may bind): find it by its source address.
	id := waitPendingEnrollment(t, k, goodIP, 3*time.Minute)
	t.Logf("kiln enrollment approve %s --machine %s: %s", id, goodName, strings.TrimSpace(k.cli("enrollment", "approve", id, "--machine", goodName)))
	evs := waitInstall(t, k, vGood, goodName, []step{
		{"Enrolled", []string{"enrollment request " + id + " approved"}},
		{"WorkflowSucceeded", []string{"machine is provisioned"}},
	}, 3*time.Minute)
	t.Logf("%s: UKI to provisioned in %s under Secure Boot:\n%s", goodName, time.Since(start).Round(time.Second), formatTimeline(withoutLogs(evs)))
	if !vGood.serialContains("Secure Boot is enabled") {
		t.Errorf("%s: the kernel's EFI stub did not report Secure Boot on: the test proves nothing about signatures", goodName)
	}
	if st := k.machineState(goodName); st != "provisioned" {
		t.Errorf("%s is %q, want provisioned", goodName, st)
	}

	for _, c := range []struct {
		v              *vm
		name, ip, arti string
	}{{vTamp, tampName, tampIP, "uki-tampered"}, {vOther, otherName, otherIP, "uki-otherkey"}} {
		evs := waitRefusedUKI(t, k, c.v, c.name, c.ip, c.arti)
		for _, e := range evs {
			if strings.HasPrefix(e.Type, "Enroll") || e.Type == "FactsReported" || e.Type == "PhoneHome" {
				t.Errorf("%s: the agent ran from a badly signed UKI: %s", c.name, e)
			}
		}
		if !c.v.serialContains("Access Denied") {
			t.Errorf("%s: the firmware did not say Access Denied; the refusal may have another cause", c.name)
		}
		if c.v.serialContains("Linux version") || c.v.serialContains("EFI stub:") {
			t.Errorf("%s: the kernel started from a badly signed UKI", c.name)
		}
		t.Logf("%s:\n%s", c.name, formatTimeline(evs))
	}
	// By now the good machine's watch has fired too (its download was at the same
	// time as the others'): its agent enrolled, so no alarm.
	evs, err := k.events(goodName)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type == "AgentMissing" {
			t.Errorf("%s: a false alarm, its agent did enroll: %s", goodName, e)
		}
	}
}

// waitPendingEnrollment returns the id of the pending enrollment request from ip.
func waitPendingEnrollment(t *testing.T, k *kilnServer, ip string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var list struct {
			Items []struct {
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
				Spec struct {
					State  string `json:"state"`
					Source string `json:"source"`
				} `json:"spec"`
			} `json:"items"`
		}
		if err := k.getJSON("/api/v1/enrollments", &list); err == nil {
			for _, e := range list.Items {
				if e.Spec.State == "pending" && e.Spec.Source == ip {
					return e.Metadata.Name
				}
			}
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("no pending enrollment request from %s within %s:\n%s", ip, timeout, k.cli("get", "enrollments"))
	return ""
}

// waitRefusedUKI waits until the machine's timeline shows the UKI fetched and then
// AgentMissing naming it.
func waitRefusedUKI(t *testing.T, k *kilnServer, v *vm, name, ip, artifact string) []event {
	t.Helper()
	steps := []step{
		{"DHCPAck", []string{ip}},
		{"ArtifactFetched", []string{artifact + ":", "over https"}},
		{"AgentMissing", []string{"booted artifact " + artifact, "no agent within " + ukiAgentDeadline.String()}},
	}
	deadline := time.Now().Add(3 * time.Minute)
	var evs []event
	for time.Now().Before(deadline) {
		var err error
		if evs, err = k.events(name); err == nil {
			if _, n := matchSteps(evs, steps); n == len(steps) {
				return evs
			}
		}
		time.Sleep(time.Second)
	}
	_, n := matchSteps(evs, steps)
	t.Fatalf("machine %s: timeline lacks step %d of %d, %v\ntimeline:\n%s", name, n+1, len(steps), steps[n], formatTimeline(evs))
	return nil
}

func sbMachine(name, mac, ip, profile string) string {
	return fmt.Sprintf(`---
kind: Machine
metadata: {name: %s, labels: {e2e: "true"}}
spec:
  profile: %s
  interfaces:
    - {name: eth0, mac: "%s", ip: %s}
`, name, profile, mac, ip)
}

// buildUKIAgent runs kiln image build --uki into the artifact directory's sub and
// returns the Artifact manifest it prints.
func buildUKIAgent(t *testing.T, k *kilnServer, sub, cmdline, key, cert string) string {
	t.Helper()
	start := time.Now()
	var stdout, stderr strings.Builder
	cmd := exec.Command(staticKiln(t), "image", "build",
		"--kernel", filepath.Join(assetDir, "vmlinuz"),
		"--modules-dir", filepath.Join(assetDir, "modules"),
		"--modules", agentModules,
		"--compression", "zstd",
		"--out", filepath.Join(k.artifactDir, sub),
		"--uki", "--uki-cmdline", cmdline,
		"--secureboot-key", key, "--secureboot-cert", cert,
		"--no-progress")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kiln image build --uki: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), "PRIVATE KEY") {
		t.Errorf("kiln image build printed key material")
	}
	t.Logf("UKI agent %s built in %s", sub, time.Since(start).Round(time.Millisecond))
	return stdout.String()
}

// writeTampered copies the UKI with one byte of its kernel section changed.
func writeTampered(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	f, err := pe.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	linux := f.Section(".linux")
	if linux == nil {
		t.Fatalf("%s has no .linux section", from)
	}
	b[linux.Offset+linux.Size/2] ^= 0x20
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeRSACert writes an RSA key and a self-signed certificate that no firmware
// trusts.
func writeRSACert(t *testing.T, dir, name string) (keyPath, certPath string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPath, certPath = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".crt")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return keyPath, certPath
}
