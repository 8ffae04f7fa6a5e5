package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// End to end: A/B slots with dm-verity images and systemd-boot's boot counting.
//
// A UEFI VM (OVMF; Kiln's DHCP, TFTP iPXE, HTTPS) has one disk laid out A/B: an ESP
// with systemd-boot as the removable-media loader, a kernel and the test system's
// initramfs, and root-a, root-a-verity, root-b, root-b-verity. Three signed verity
// images (ext4 with /kiln/version; veritysetup format; openssl smime over the root
// hash) are Artifacts:
//
//  1. reprovision: the agent writes os-a to slot a (image2slot) and powers off; the
//     machine is provisioned; booted from its disk, systemd-boot boots slot a, which
//     phones home with kiln.slot=a kiln.version=os-a: Kiln records slot a.
//  2. kiln machine upgrade --image os-b: slot b, with one boot try; it boots and phones
//     home from b: Kiln records the upgrade (previous slot a).
//  3. kiln machine upgrade --image os-c: slot a again, but os-c is broken (its
//     /kiln/broken makes the test system's init exit: a kernel panic, a reboot).
//     systemd-boot has counted the try down to zero and boots slot b, which phones
//     home: Kiln records the rollback.
//
// The test system blesses its boot entry once up (as systemd-bless-boot does). Its
// initramfs does not set up dm-verity at boot (busybox has no dmsetup): what is
// verified is the agent's check of each image before and after it wrote it, and the
// slot bookkeeping on both sides.

const slotsProfile = "e2e-ab"

// slotImage is one signed verity image in the artifact directory.
type slotImage struct {
	name, rootHash, sig string
}

// buildSlotImages makes the three root images, their hash trees and signatures in
// Kiln's artifact directory, and returns the signer's certificate.
func buildSlotImages(t *testing.T, k *kilnServer) ([]slotImage, string) {
	t.Helper()
	dir := filepath.Join(k.artifactDir, "slots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	key, cert := filepath.Join(work, "signer.key"), filepath.Join(work, "signer.pem")
	run(nil, "openssl", "req", "-x509", "-new", "-nodes", "-days", "1", "-subj", "/CN=kiln-e2e-os-signing",
		"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", key, "-out", cert)
	var imgs []slotImage
	for i, name := range []string{"os-a", "os-b", "os-c"} {
		root := filepath.Join(work, name)
		os.MkdirAll(filepath.Join(root, "kiln"), 0o755)
		os.WriteFile(filepath.Join(root, "kiln", "version"), []byte(name+"\n"), 0o644)
		if name == "os-c" {
			os.WriteFile(filepath.Join(root, "kiln", "broken"), []byte("this image does not come up\n"), 0o644)
		}
		raw, tree := filepath.Join(dir, name+".raw"), filepath.Join(dir, name+".verity")
		// Fixed UUIDs, hash seed, times and salt: the same image every run.
		run([]string{"E2FSPROGS_FAKE_TIME=946684800"}, "mkfs.ext4", "-q", "-F", "-L", "root", "-U", fmt.Sprintf("6b696c6e-736c-4f74-8000-00000000000%d", i),
			"-E", "hash_seed=6b696c6e-6861-4873-8000-000000000003,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0",
			"-d", root, raw, "4M")
		out := run(nil, "veritysetup", "format", raw, tree, "--salt=6b696c6e", fmt.Sprintf("--uuid=6b696c6e-7665-4172-8000-00000000000%d", i))
		m := regexp.MustCompile(`Root hash:\s+([0-9a-f]{64})`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("veritysetup printed no root hash:\n%s", out)
		}
		os.WriteFile(filepath.Join(work, "roothash"), []byte(m[1]), 0o600)
		sig := filepath.Join(work, name+".p7s")
		run(nil, "openssl", "smime", "-sign", "-nocerts", "-noattr", "-binary", "-in", filepath.Join(work, "roothash"),
			"-inkey", key, "-signer", cert, "-outform", "der", "-out", sig)
		b, _ := os.ReadFile(sig)
		imgs = append(imgs, slotImage{name: name, rootHash: m[1], sig: base64.StdEncoding.EncodeToString(b)})
	}
	pem, _ := os.ReadFile(cert)
	return imgs, string(pem)
}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// slotsManifest: the artifacts of the three images, the template (image2slot and
// poweroff: the test then boots the disk, as a BMC would) and the profile.
func slotsManifest(t *testing.T, k *kilnServer, imgs []slotImage, certPEM string) string {
	var b strings.Builder
	for _, img := range imgs {
		raw, tree := filepath.Join(k.artifactDir, "slots", img.name+".raw"), filepath.Join(k.artifactDir, "slots", img.name+".verity")
		fmt.Fprintf(&b, `---
kind: Artifact
metadata: {name: %[1]s-verity}
spec: {source: slots/%[1]s.verity, sha256: %[2]s}
---
kind: Artifact
metadata: {name: %[1]s}
spec:
  source: slots/%[1]s.raw
  sha256: %[3]s
  verity: {hashTree: %[1]s-verity, rootHash: %[4]s, rootHashSignature: "%[5]s"}
`, img.name, fileSHA256(t, tree), fileSHA256(t, raw), img.rootHash, img.sig)
	}
	indented := "          " + strings.ReplaceAll(strings.TrimSpace(certPEM), "\n", "\n          ")
	fmt.Fprintf(&b, `---
kind: Template
metadata: {name: %[1]s}
spec:
  timeout: 10m
  actions:
    - name: slot
      type: image2slot
      timeout: 3m
      args:
        disk: /dev/vda
        image: os-a
        linux: /vmlinuz
        initrd: [/initrd.img]
        cmdline: "console=ttyS0 panic=-1 quiet kiln.url=%[2]s"
        tries: 1
        bootDeadline: 5m
        trustedCerts: |
%[3]s
    - name: poweroff
      type: poweroff
---
kind: Profile
metadata: {name: %[1]s}
spec:
  description: A/B slots of signed dm-verity images
  boot:
    agent: true
    cmdline: "console=ttyS0 panic=-1 quiet"
  workflow: %[1]s
`, slotsProfile, kilnURL, indented)
	return b.String()
}

// slotSystemInit is the test system's /init: the slot and version from the kernel
// command line (the boot entry's), the version in the slot's root, a phone-home.
const slotSystemInit = `#!/bin/busybox sh
E2E_TAG=kiln-e2e-slot
. /lib/e2e.sh
load_modules virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk crc16 mbcache crc32c_generic jbd2 ext4 fat vfat nls_cp437 nls_ascii nls_utf8
slot=; url=
for w in $(cat /proc/cmdline); do
  case "$w" in kiln.slot=*) slot=${w#kiln.slot=} ;; kiln.url=*) url=${w#kiln.url=} ;; esac
done
say "booted slot $slot: $(cat /proc/cmdline)"
# partdev NAME: the partition with that GPT name, from the kernel's uevents.
partdev() {
  i=0
  while [ $i -lt 50 ]; do
    for u in /sys/class/block/*/uevent; do
      if grep -qx "PARTNAME=$1" "$u"; then sed -n 's/^DEVNAME=//p' "$u"; return 0; fi
    done
    sleep 0.1; i=$((i+1))
  done
  return 1
}
dev=$(partdev root-$slot) || finish "no partition root-$slot"
mount -t ext4 -o ro "/dev/$dev" /mnt || finish "cannot mount /dev/$dev"
version=$(head -n1 /mnt/kiln/version | tr -cd 'A-Za-z0-9._-')
if [ -e /mnt/kiln/broken ]; then
  say "slot $slot ($version) is broken: init exits, the kernel panics and reboots"
  umount /mnt
  sync
  exit 1
fi
umount /mnt
# Up: bless the entry, as systemd-bless-boot does (the boot counter leaves its name),
# so that systemd-boot keeps it as the good fallback.
esp=$(partdev esp) || finish "no ESP"
mkdir -p /boot
mount -t vfat "/dev/$esp" /boot || finish "cannot mount the ESP /dev/$esp"
for f in /boot/loader/entries/kiln-*-slot-$slot+*.conf; do
  [ -e "$f" ] || continue
  mv "$f" "${f%%+*}.conf" && say "blessed ${f##*/}"
done
umount /boot
nic_up
dhcp
phone_home "$url" "booted+kiln.slot=$slot+kiln.version=$version"
finish "phoned home from slot $slot ($version)"
`

// slotsDisk is the A/B disk: GPT (esp, root-a, root-a-verity, root-b,
// root-b-verity) and a FAT ESP with systemd-boot, the kernel and the test system.
func slotsDisk(t *testing.T, l *lab) string {
	t.Helper()
	work := t.TempDir()
	// The test system's initramfs: the phone-home initramfs's busybox and library,
	// the disk modules, its own /init.
	initrd := filepath.Join(work, "initrd")
	os.MkdirAll(initrd, 0o755)
	cmd := exec.Command("sh", "-c", "gzip -dc "+filepath.Join(assetDir, "phone-home.cpio.gz")+" | cpio -id --quiet")
	cmd.Dir = initrd
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpack the phone-home initramfs: %v\n%s", err, out)
	}
	os.MkdirAll(filepath.Join(initrd, "mnt"), 0o755)
	for _, m := range []string{"virtio_blk", "crc16", "mbcache", "crc32c_generic", "jbd2", "ext4", "fat", "vfat", "nls_cp437", "nls_ascii", "nls_utf8"} {
		copyFile(t, filepath.Join(assetDir, "modules", m+".ko"), filepath.Join(initrd, "lib", "modules", m+".ko"))
	}
	if err := os.WriteFile(filepath.Join(initrd, "init"), []byte(slotSystemInit), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command("sh", "-c", "find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -n -1 > ../initrd.img")
	cmd.Dir = initrd
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pack the test system's initramfs: %v\n%s", err, out)
	}
	esp := filepath.Join(work, "esp.fat")
	loader := filepath.Join(work, "loader.conf")
	os.WriteFile(loader, []byte("timeout 0\n"), 0o644)
	steps := [][]string{
		{"mkfs.fat", "-F", "16", "-n", "ESP", "-C", esp, "16384"},
		{"mmd", "-i", esp, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"},
		{"mcopy", "-i", esp, systemdBoot, "::/EFI/BOOT/BOOTX64.EFI"},
		{"mcopy", "-i", esp, filepath.Join(assetDir, "vmlinuz"), "::/vmlinuz"},
		{"mcopy", "-i", esp, filepath.Join(work, "initrd.img"), "::/initrd.img"},
		{"mcopy", "-i", esp, loader, "::/loader/loader.conf"},
	}
	disk := filepath.Join(l.dir, "ab-disk.img")
	steps = append(steps,
		[]string{"truncate", "-s", "64M", disk},
		[]string{"sgdisk", "-n", "1:2048:+16M", "-t", "1:ef00", "-c", "1:esp",
			"-n", "2:0:+8M", "-c", "2:root-a", "-n", "3:0:+1M", "-c", "3:root-a-verity",
			"-n", "4:0:+8M", "-c", "4:root-b", "-n", "5:0:+1M", "-c", "5:root-b-verity", disk},
		[]string{"dd", "if=" + esp, "of=" + disk, "bs=1M", "seek=1", "conv=notrunc", "status=none"})
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(s, " "), err, out)
		}
	}
	return disk
}

const systemdBoot = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

// espEntries lists the ESP's boot entries on the disk image (mtools, no mount).
func espEntries(t *testing.T, disk string) []string {
	t.Helper()
	out, err := exec.Command("mdir", "-b", "-i", disk+"@@1M", "::/loader/entries").CombinedOutput()
	if err != nil {
		t.Fatalf("mdir: %v\n%s", err, out)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			names = append(names, filepath.Base(l))
		}
	}
	slices.Sort(names)
	return names
}

// machineSlots is the slot part of a machine's status.
type machineSlots struct {
	Slot, SlotVersion, PreviousSlot string
	Rollbacks                       int
}

func (k *kilnServer) machineSlots(name string) machineSlots {
	k.t.Helper()
	var m struct {
		Status machineSlots `json:"status"`
	}
	if err := k.getJSON("/api/v1/machines/"+name, &m); err != nil {
		k.t.Fatalf("machine %s: %v", name, err)
	}
	return m.Status
}

// TestSlotsUpgradeAndRollback: install slot a, upgrade to b, upgrade to a broken c
// that falls back to b; Kiln shows each step.
func TestSlotsUpgradeAndRollback(t *testing.T) {
	l := newLab(t)
	requireInstall(t)
	requireTools(t, "veritysetup", "openssl", "mkfs.fat", "mcopy", "mdir", "sgdisk", "mkfs.ext4", "cpio")
	requireFiles(t, systemdBoot, filepath.Join(trixieIPXEDir, "ipxe.efi"), filepath.Join(assetDir, "modules", "vfat.ko"), filepath.Join(assetDir, "phone-home.cpio.gz"))
	k := startKiln(t, l, kilnOptions{dhcp: true, https: true, ipxeDirs: []string{trixieIPXEDir, "/usr/lib/ipxe"}, extra: []string{"--boot-https", "efi"}})
	agent := buildAgentEnvModules(t, k, agentModules+",vfat,nls_cp437,nls_ascii,nls_utf8")
	imgs, cert := buildSlotImages(t, k)
	const name, mac, ip = "ab-1", "52:54:00:e2:e0:40", "10.77.0.40"
	k.apply(agent + "---\n" + labSubnetManifest("e2e") + slotsManifest(t, k, imgs, cert) + fmt.Sprintf(`---
kind: Machine
metadata: {name: %s, labels: {e2e: "true"}}
spec:
  profile: %s
  interfaces:
    - {name: eth0, mac: "%s", ip: %s}
`, name, slotsProfile, mac, ip))
	disk := slotsDisk(t, l)
	trust := firmwareTrusts(k.bootCASigList())
	// Each step is two boots, as a BMC would drive them: the netboot of the agent,
	// which writes the slot and powers off, then a boot from the disk (systemd-boot,
	// the slot, its phone-home). Here the test is the BMC: "next boot PXE" and "next
	// boot disk" are two QEMU runs with the NIC or the disk first. (OVMF makes no
	// boot option for the disk when the NIC comes first, so iPXE's exit to the next
	// boot device, what Kiln's local-disk script does, ends in its setup menu here.)
	workflows := 0
	agentBoot := func(vmName string) {
		t.Helper()
		workflows++
		v := startVM(t, l, vmConfig{Name: vmName, MAC: mac, Firmware: firmwareUEFI, Disks: []string{disk}, MemoryMB: 512,
			Timeout: 4 * time.Minute, Extra: trust})
		want := make([]step, workflows)
		for i := range want {
			want[i] = step{"WorkflowSucceeded", []string{"machine is provisioned"}}
		}
		start := time.Now()
		waitTimeline(t, k, v, name, want, 3*time.Minute)
		select {
		case <-v.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the agent did not power off after the workflow", vmName)
		}
		t.Logf("%s: workflow %d succeeded and the agent powered off after %.0fs", vmName, workflows, time.Since(start).Seconds())
	}
	diskBoot := func(vmName string, want step, budget time.Duration) {
		t.Helper()
		v := startVM(t, l, vmConfig{Name: vmName, MAC: mac, Firmware: firmwareUEFI, Disks: []string{disk}, MemoryMB: 256, MayReboot: true,
			BootDisk: true, Timeout: budget + 30*time.Second})
		start := time.Now()
		waitTimeline(t, k, v, name, []step{want}, budget)
		t.Logf("%s: %s after %.0fs", vmName, want.Type, time.Since(start).Seconds())
		select {
		case <-v.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not power off after phoning home", vmName)
		}
	}

	t.Logf("%s", strings.TrimSpace(k.cli("machine", "reprovision", name, "--no-power")))
	agentBoot("ab-1-agent-a")
	diskBoot("ab-1-disk-a", step{"SlotBooted", []string{"booted slot a (os-a)"}}, 2*time.Minute)
	if s := k.machineSlots(name); s.Slot != "a" || s.SlotVersion != "os-a" || s.Rollbacks != 0 {
		t.Fatalf("after the install: %+v, want slot a os-a", s)
	}

	out := k.cli("machine", "upgrade", name, "--image", "os-b", "--no-power")
	if !strings.Contains(out, "upgrading to os-b in slot b") {
		t.Errorf("kiln machine upgrade: %q", out)
	}
	agentBoot("ab-1-agent-b")
	diskBoot("ab-1-disk-b", step{"SlotBooted", []string{"booted slot b (os-b)", "previous slot a (os-a)"}}, 2*time.Minute)
	if s := k.machineSlots(name); s.Slot != "b" || s.SlotVersion != "os-b" || s.PreviousSlot != "a" || s.Rollbacks != 0 {
		t.Fatalf("after the upgrade to b: %+v", s)
	}

	k.cli("machine", "upgrade", name, "--image", "os-c", "--no-power")
	agentBoot("ab-1-agent-c")
	// os-c panics; the VM resets; systemd-boot, its one try used, boots slot b.
	diskBoot("ab-1-disk-c", step{"SlotRollback", []string{"upgrade to slot a (os-c", "fell back to slot b (os-b); rollback 1"}}, 3*time.Minute)
	if s := k.machineSlots(name); s.Slot != "b" || s.SlotVersion != "os-b" || s.Rollbacks != 1 {
		t.Fatalf("after the broken upgrade: %+v, want slot b os-b, 1 rollback", s)
	}
	// systemd-boot's counting as it left it: os-c's entry out of tries.
	entries := strings.Join(espEntries(t, disk), " ")
	if entries != "kiln-0002-slot-b.conf kiln-0003-slot-a+0-1.conf" {
		t.Errorf("ESP entries %q, want kiln-0002-slot-b.conf (blessed) and kiln-0003-slot-a+0-1.conf (no tries left)", entries)
	}
	var buf bytes.Buffer
	evs, _ := k.events(name)
	for _, e := range withoutLogs(evs) {
		if strings.HasPrefix(e.Type, "Slot") || e.Type == "WorkflowCreated" || e.Type == "PhoneHome" {
			fmt.Fprintln(&buf, e)
		}
	}
	t.Logf("slot timeline:\n%s", buf.String())
}
