package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Each test is one scenario with its own namespace, Kiln and VMs. They run one after
// the other (at most two QEMUs at once, inside one scenario): the machines these run
// on have two cores and no KVM.

// bootTimeout bounds waiting for one VM's timeline; QEMU itself is killed at 150 s.
const bootTimeout = 140 * time.Second

// TestNetbootBIOSKilnDHCP: SeaBIOS runs virtio-net's iPXE ROM; Kiln is the DHCP
// server (full mode, a reserved address) and hands iPXE the boot script URL.
func TestNetbootBIOSKilnDHCP(t *testing.T) {
	l := newLab(t)
	k := startKiln(t, l, kilnOptions{dhcp: true})
	const mac, ip = "52:54:00:e2:e0:01", "10.77.0.21"
	k.apply(bootManifest("full") + machineManifest("bios-1", mac, ip))

	v := startVM(t, l, vmConfig{Name: "bios-1", MAC: mac, Firmware: firmwareBIOS})
	steps := append([]step{{"DHCPAck", []string{ip}}}, netbootSteps(mac, "pcbios")...)
	evs := waitTimeline(t, k, v, "bios-1", steps, bootTimeout)
	if got := assertNetboot(t, v, "bios-1", evs, steps); got.String() != ip {
		t.Errorf("the kernel got %s by DHCP, want the machine's reserved %s", got, ip)
	}
	k.demoShow("bios-1")
}

// TestNetbootUEFIKilnDHCP: OVMF's own PXE client (the NIC's ROM disabled) gets
// Debian 13's ipxe.efi from Kiln's TFTP server, then iPXE gets the boot script, the
// kernel and the initrd over verified HTTPS: Kiln runs with --boot-https efi and the
// firmware trusts the boot CA (TlsCaCertificate by fw_cfg, as a BMC would set it).
// Kiln answers both DHCP rounds.
func TestNetbootUEFIKilnDHCP(t *testing.T) {
	l := newLab(t)
	requireFiles(t, filepath.Join(trixieIPXEDir, "ipxe.efi"))
	k := startKiln(t, l, kilnOptions{dhcp: true, https: true, ipxeDirs: []string{trixieIPXEDir, "/usr/lib/ipxe"},
		extra: []string{"--boot-https", "efi"}})
	const mac, ip = "52:54:00:e2:e0:02", "10.77.0.22"
	k.apply(phoneHomeOverHTTP("full") + machineManifest("uefi-1", mac, ip))

	v := startVM(t, l, vmConfig{Name: "uefi-1", MAC: mac, Firmware: firmwareUEFI, Extra: firmwareTrusts(k.bootCASigList())})
	// Kiln knows the machine's address from its own lease, so the TFTP transfer of
	// iPXE is on the timeline too, before iPXE's own DHCP round, whose ACK names the
	// HTTPS script URL.
	steps := append([]step{
		{"DHCPAck", []string{ip}},
		{"TFTPTransfer", []string{".efi:"}},
		{"DHCPAck", []string{ip, "boot " + kilnHTTPSURL + "/boot.ipxe"}},
	}, netbootStepsOver(mac, "efi", "https")...)
	evs := waitTimeline(t, k, v, "uefi-1", steps, bootTimeout)
	if got := assertNetboot(t, v, "uefi-1", evs, steps); got.String() != ip {
		t.Errorf("the kernel got %s by DHCP, want the machine's reserved %s", got, ip)
	}
	assertFetchedOver(t, "uefi-1", evs, "https")
}

// TestNetbootProxyDHCP: dnsmasq on another host of the link hands out addresses and
// says nothing about booting; Kiln's subnet is in proxy mode and only tells PXE and
// iPXE clients what to boot. One BIOS (iPXE ROM) and one UEFI (firmware PXE) machine
// boot side by side. Kiln runs with --boot-https efi: its proxy offer to the UEFI
// iPXE names the HTTPS script URL (the firmware trusts the boot CA), the one to the
// BIOS iPXE the HTTP one (BIOS iPXE cannot trust a private CA without a rebuild).
func TestNetbootProxyDHCP(t *testing.T) {
	l := newLab(t)
	requireFiles(t, filepath.Join(trixieIPXEDir, "ipxe.efi"))
	k := startKiln(t, l, kilnOptions{dhcp: true, https: true, ipxeDirs: []string{trixieIPXEDir, "/usr/lib/ipxe"},
		extra: []string{"--boot-https", "efi"}})
	const macBIOS, macUEFI = "52:54:00:e2:e0:03", "52:54:00:e2:e0:04"
	k.apply(phoneHomeOverHTTP("proxy") + machineManifest("proxy-bios", macBIOS, "") + machineManifest("proxy-uefi", macUEFI, ""))
	startDnsmasq(t, l) // addresses only: no boot options

	vb := startVM(t, l, vmConfig{Name: "proxy-bios", MAC: macBIOS, Firmware: firmwareBIOS})
	vu := startVM(t, l, vmConfig{Name: "proxy-uefi", MAC: macUEFI, Firmware: firmwareUEFI, Extra: firmwareTrusts(k.bootCASigList())})
	for _, c := range []struct {
		v                     *vm
		name, mac, pf, scheme string
		script                string
	}{
		{vb, "proxy-bios", macBIOS, "pcbios", "http", kilnURL + "/boot.ipxe"},
		{vu, "proxy-uefi", macUEFI, "efi", "https", kilnHTTPSURL + "/boot.ipxe"},
	} {
		steps := append([]step{{"DHCPOffer", []string{"proxyDHCP offer, boot " + c.script}}}, netbootStepsOver(c.mac, c.pf, c.scheme)...)
		evs := waitTimeline(t, k, c.v, c.name, steps, bootTimeout)
		if got := assertNetboot(t, c.v, c.name, evs, steps); !inRange(got, "10.77.0.150", "10.77.0.199") {
			t.Errorf("machine %s: the kernel got %s by DHCP, want an address from dnsmasq's 10.77.0.150-199", c.name, got)
		}
		assertFetchedOver(t, c.name, evs, c.scheme)
	}
	leases, err := os.ReadFile(filepath.Join(l.dir, "dnsmasq.leases"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mac := range []string{macBIOS, macUEFI} {
		if !strings.Contains(string(leases), mac) {
			t.Errorf("dnsmasq has no lease for %s; leases:\n%s", mac, leases)
		}
	}
}

// TestNetbootTwoVMsAtOnce: two machines, one virtio-net and one e1000, boot at the
// same time from Kiln's pool.
func TestNetbootTwoVMsAtOnce(t *testing.T) {
	l := newLab(t)
	requireFiles(t, "/usr/lib/ipxe/qemu/efi-e1000.rom")
	k := startKiln(t, l, kilnOptions{dhcp: true})
	const mac1, mac2 = "52:54:00:e2:e0:05", "52:54:00:e2:e0:06"
	k.apply(bootManifest("full") + machineManifest("pair-1", mac1, "") + machineManifest("pair-2", mac2, ""))

	v1 := startVM(t, l, vmConfig{Name: "pair-1", MAC: mac1, Firmware: firmwareBIOS})
	v2 := startVM(t, l, vmConfig{Name: "pair-2", MAC: mac2, Firmware: firmwareBIOS, NIC: "e1000"})
	s1, s2 := netbootSteps(mac1, "pcbios"), netbootSteps(mac2, "pcbios")
	a1 := assertNetboot(t, v1, "pair-1", waitTimeline(t, k, v1, "pair-1", s1, bootTimeout), s1)
	a2 := assertNetboot(t, v2, "pair-2", waitTimeline(t, k, v2, "pair-2", s2, bootTimeout), s2)
	for name, a := range map[string]netip.Addr{"pair-1": a1, "pair-2": a2} {
		if !inRange(a, "10.77.0.100", "10.77.0.149") {
			t.Errorf("machine %s: the kernel got %s, want an address from the pool 10.77.0.100-149", name, a)
		}
	}
	if a1 == a2 {
		t.Errorf("both machines got %s", a1)
	}
}

// TestNetbootDnsmasqFullDHCP is an interop check of Kiln's TFTP and HTTP(S) boot
// path with another DHCP server: dnsmasq hands out addresses, points OVMF's PXE
// client at ipxe.efi on Kiln's TFTP server and tells iPXE to chain Kiln's /boot.ipxe;
// Kiln serves no DHCP at all. A BIOS (iPXE ROM) and a UEFI (firmware PXE) machine
// boot side by side. Here dnsmasq, not Kiln, names the script URL, so --boot-https
// would change nothing: Kiln runs with --boot-ca (the boot CA and its certificate on
// the HTTPS listener), and dnsmasq sends UEFI iPXE to https:// (the firmware trusts
// the boot CA) and BIOS iPXE to http://, as an operator's dnsmasq would.
func TestNetbootDnsmasqFullDHCP(t *testing.T) {
	l := newLab(t)
	requireFiles(t, filepath.Join(trixieIPXEDir, "ipxe.efi"))
	k := startKiln(t, l, kilnOptions{tftp: true, https: true, ipxeDirs: []string{trixieIPXEDir, "/usr/lib/ipxe"},
		extra: []string{"--boot-ca"}})
	type machine struct{ name, mac, firmware, platform, scheme string }
	machines := []machine{
		{"interop-bios", "52:54:00:e2:e0:07", firmwareBIOS, "pcbios", "http"},
		{"interop-uefi", "52:54:00:e2:e0:09", firmwareUEFI, "efi", "https"},
	}
	manifest := phoneHomeOverHTTP("")
	for _, m := range machines {
		manifest += machineManifest(m.name, m.mac, "")
	}
	k.apply(manifest)
	sigList := k.bootCASigList()
	startDnsmasq(t, l, dnsmasqChainsKiln...)

	vms := make([]*vm, len(machines))
	for i, m := range machines {
		cfg := vmConfig{Name: m.name, MAC: m.mac, Firmware: m.firmware}
		if m.firmware == firmwareUEFI {
			cfg.Extra = firmwareTrusts(sigList)
		}
		vms[i] = startVM(t, l, cfg)
	}
	for i, m := range machines {
		steps := netbootStepsOver(m.mac, m.platform, m.scheme)
		evs := waitTimeline(t, k, vms[i], m.name, steps, bootTimeout)
		if got := assertNetboot(t, vms[i], m.name, evs, steps); !inRange(got, "10.77.0.150", "10.77.0.199") {
			t.Errorf("machine %s: the kernel got %s, want an address from dnsmasq's 10.77.0.150-199", m.name, got)
		}
		assertFetchedOver(t, m.name, evs, m.scheme)
	}
}

// dnsmasqChainsKiln are dnsmasq's options for booting from Kiln. x86-64 UEFI
// firmware (RFC 4578 client architecture 7) loads iPXE from Kiln's TFTP server; iPXE
// (user class "iPXE") gets Kiln's generic script: over HTTPS when it is UEFI iPXE
// (architecture 7 too), over HTTP when it is BIOS iPXE (architecture 0). The tags
// exclude each other so that no rule depends on which of two matching dhcp-boot
// lines dnsmasq picks. Option 175.176 (iPXE's "no ProxyDHCP") = 1 tells iPXE not to
// wait ~3 s for ProxyDHCP offers after the first offer; firmware PXE clients do not
// see these options.
var dnsmasqChainsKiln = []string{
	"--dhcp-match=set:efi64,option:client-arch,7",
	"--dhcp-userclass=set:ipxe,iPXE",
	"--dhcp-boot=tag:efi64,tag:!ipxe,ipxe.efi,," + kilnIP,
	"--dhcp-boot=tag:efi64,tag:ipxe," + kilnHTTPSURL + "/boot.ipxe",
	"--dhcp-boot=tag:!efi64,tag:ipxe," + kilnURL + "/boot.ipxe",
	"--dhcp-option=tag:ipxe,encap:175,176,1b",
}

// netbootStepsOver is netbootSteps with the scheme ("http" or "https") the boot
// script and the artifacts are fetched over. "over http" also matches "over https":
// assertFetchedOver tells them apart.
func netbootStepsOver(mac, platform, scheme string) []step {
	steps := netbootSteps(mac, platform)
	for i, s := range steps {
		if s.Type == "BootScript" || s.Type == "ArtifactFetched" {
			steps[i].Contains = append(slices.Clip(s.Contains), "over "+scheme)
		}
	}
	return steps
}

// assertFetchedOver fails the test if a boot script or an artifact on a machine's
// timeline went over another scheme than scheme. Kiln ends those events' messages
// with "over http" or "over https" (internal/boot), so the end is compared: a
// substring check would take https for http.
func assertFetchedOver(t *testing.T, machine string, evs []event, scheme string) {
	t.Helper()
	for _, e := range evs {
		if (e.Type == "BootScript" || e.Type == "ArtifactFetched") && !strings.HasSuffix(e.Message, " over "+scheme) {
			t.Errorf("machine %s: want everything fetched over %s, got: %s", machine, scheme, e)
		}
	}
}

// TestNetbootProvisionedBootsLocalDisk: a machine whose status.state is
// "provisioned" gets iPXE's `exit`, and the firmware boots its next device: a disk
// whose boot sector prints a marker on the serial port.
func TestNetbootProvisionedBootsLocalDisk(t *testing.T) {
	l := newLab(t)
	k := startKiln(t, l, kilnOptions{dhcp: true})
	const mac, name = "52:54:00:e2:e0:08", "done-1"
	k.apply(bootManifest("full") + machineManifest(name, mac, ""))
	k.setMachineState(name, "provisioned")

	// The script itself, as iPXE would ask for it (buildarch "probe" tells this
	// request's event from the VM's).
	resp, err := k.http.Get(kilnURL + "/ipxe?mac=" + strings.ReplaceAll(mac, ":", "-") + "&platform=pcbios&buildarch=probe")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if !strings.Contains(body, "\nexit\n") || !strings.Contains(body, "local disk") || strings.Contains(body, "kernel ") {
		t.Fatalf("GET /ipxe for a provisioned machine: want a local-disk script (exit), got:\n%s", body)
	}

	disk := filepath.Join(l.dir, "disk.img")
	// 1 MiB: SeaBIOS cannot read a disk of a single sector.
	img := make([]byte, 1<<20)
	copy(img, bootSector())
	if err := os.WriteFile(disk, img, 0o600); err != nil {
		t.Fatal(err)
	}
	v := startVM(t, l, vmConfig{Name: name, MAC: mac, Firmware: firmwareBIOS, Disks: []string{disk}, Timeout: 90 * time.Second})
	evs := waitTimeline(t, k, v, name, []step{{"BootScript", []string{"served local-disk script", mac, "(i386 pcbios)"}}}, bootTimeout)
	deadline := time.Now().Add(60 * time.Second)
	for !v.serialContains(diskMarker) && !v.exited() && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
	}
	if !v.serialContains(diskMarker) {
		t.Fatalf("the VM did not boot its disk after iPXE exited (no %q on the serial console)", diskMarker)
	}
	t.Logf("machine %s: booted its local disk %.1fs after QEMU start", name, time.Since(v.started).Seconds())
	if evs, err = k.events(name); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type == "ArtifactFetched" || e.Type == "PhoneHome" {
			t.Errorf("a provisioned machine fetched or booted something: %s", e)
		}
	}
	t.Logf("timeline:\n%s", formatTimeline(evs))
}

// diskMarker is what bootSector prints.
const diskMarker = "KILN-E2E-LOCAL-DISK"

// bootSector is a 512-byte MBR that writes diskMarker to COM1 and then triple-faults,
// which -no-reboot turns into QEMU exiting.
func bootSector() []byte {
	code := []byte{
		0x31, 0xc0, // xor ax, ax
		0x8e, 0xd8, // mov ds, ax
		0xfc,             // cld
		0xba, 0xf8, 0x03, // mov dx, 0x3f8 (COM1 data register)
		0xbe, 0x20, 0x7c, // mov si, 0x7c20 (the message)
		0xac,       // l: lodsb
		0x84, 0xc0, // test al, al
		0x74, 0x03, // jz done
		0xee,       // out dx, al
		0xeb, 0xf8, // jmp l
		0x0f, 0x01, 0x1e, 0xa0, 0x7d, // done: lidt [0x7da0] (six zero bytes: an empty IDT)
		0xcc,       // int3 with no IDT: triple fault, reset
		0xeb, 0xfe, // jmp $
	}
	b := make([]byte, 512)
	copy(b, code)
	copy(b[0x20:], "\r\n"+diskMarker+": booted from the local disk\r\n\x00")
	b[510], b[511] = 0x55, 0xaa
	return b
}
