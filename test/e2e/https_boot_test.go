package e2e

import (
	"github.com/kilnhq/kiln/internal/testkit"

	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/efisig"
)

// Debian 13's iPXE (HTTPS, scripts/install-deps.sh), searched before Debian 12's.
var trixieIPXEDir = func() string {
	if d := os.Getenv("KILN_E2E_IPXE_DIR"); d != "" {
		return d
	}
	abs, _ := filepath.Abs("../../.cache/ipxe/usr/lib/ipxe")
	return abs
}()

// httpBootOnly switches OVMF's PXE clients off, so that its UEFI HTTP boot client
// (HttpBootDxe) is what boots from the NIC.
var httpBootOnly = []string{
	"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
	"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
	"-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=n",
}

// firmwareTrusts hands OVMF a TlsCaCertificate variable (an EFI_SIGNATURE_LIST file)
// through fw_cfg, as firmware setup or a BMC would: both OVMF's HTTPS boot client
// and iPXE's EFI build (interface/efi/efi_cacert.c) trust it. QEMU warns that the
// name lacks "opt/": OVMF reads exactly this name.
func firmwareTrusts(sigList string) []string {
	return []string{"-fw_cfg", "name=etc/edk2/https/cacerts,file=" + sigList}
}

// phoneHomeOverHTTP is bootManifest with the initramfs phoning home to Kiln's plain
// HTTP port: busybox wget has no certificate check worth the name, and what these
// scenarios test is how iPXE and the firmware fetch, not the phone-home.
func phoneHomeOverHTTP(subnetMode string) string {
	return strings.Replace(bootManifest(subnetMode), "kiln.url={{ .ServerURL }}", "kiln.url="+kilnURL, 1)
}

// TestNetbootUEFIHTTPBoot: OVMF's own UEFI HTTP boot client (PXE switched off, no
// NIC ROM) asks Kiln's DHCP as "HTTPClient", gets http://KILN:8080/ipxe.efi, sends
// HEAD for its size and GET on the same connection, and runs iPXE, which boots the
// phone-home profile.
func TestNetbootUEFIHTTPBoot(t *testing.T) {
	l := newLab(t)
	requireFiles(t, filepath.Join(trixieIPXEDir, "ipxe.efi"))
	k := startKiln(t, l, kilnOptions{dhcp: true, ipxeDirs: []string{trixieIPXEDir, "/usr/lib/ipxe"}})
	const mac, ip = "52:54:00:e2:e1:01", "10.77.0.31"
	k.apply(bootManifest("full") + machineManifest("httpboot-1", mac, ip))

	v := startVM(t, l, vmConfig{Name: "httpboot-1", MAC: mac, Firmware: firmwareUEFI, Extra: httpBootOnly})
	steps := append([]step{{"DHCPAck", []string{ip}}, {"HTTPBootFile", []string{"ipxe.efi over http:"}}}, netbootSteps(mac, "efi")...)
	evs := waitTimeline(t, k, v, "httpboot-1", steps, bootTimeout)
	if got := assertNetboot(t, v, "httpboot-1", evs, steps); got.String() != ip {
		t.Errorf("the kernel got %s by DHCP, want the machine's reserved %s", got, ip)
	}
	for _, e := range evs {
		if e.Type == "TFTPTransfer" {
			t.Errorf("a TFTP transfer with PXE switched off: %s", e)
		}
	}
}

// TestNetbootUEFIHTTPS: with --boot-https efi and the boot CA in the firmware's
// TlsCaCertificate, two machines boot over verified HTTPS side by side:
//   - firmware PXE -> ipxe.efi (Debian 13) over TFTP -> iPXE fetches the script, the
//     kernel and the initrd from https://KILN:8443;
//   - UEFI HTTPS boot (PXE off): the firmware itself fetches https://KILN:8443/ipxe.efi
//     (RSA key exchange: OVMF offers no ECDHE), then iPXE as above.
func TestNetbootUEFIHTTPS(t *testing.T) {
	l := newLab(t)
	requireFiles(t, filepath.Join(trixieIPXEDir, "ipxe.efi"))
	k := startKiln(t, l, kilnOptions{dhcp: true, https: true, ipxeDirs: []string{trixieIPXEDir, "/usr/lib/ipxe"},
		extra: []string{"--boot-https", "efi"}})
	const macPXE, ipPXE = "52:54:00:e2:e1:02", "10.77.0.32"
	const macHTTP, ipHTTP = "52:54:00:e2:e1:03", "10.77.0.33"
	k.apply(phoneHomeOverHTTP("full") + machineManifest("https-pxe", macPXE, ipPXE) + machineManifest("https-httpboot", macHTTP, ipHTTP))
	sigList := k.bootCASigList()

	vp := startVM(t, l, vmConfig{Name: "https-pxe", MAC: macPXE, Firmware: firmwareUEFI, Extra: firmwareTrusts(sigList)})
	vh := startVM(t, l, vmConfig{Name: "https-httpboot", MAC: macHTTP, Firmware: firmwareUEFI,
		Extra: append(firmwareTrusts(sigList), httpBootOnly...)})
	overHTTPS := func(mac string) []step {
		return []step{
			{"BootScript", []string{"served install script", mac, "efi", "over https"}},
			{"ArtifactFetched", []string{kernelArtifact + ":", "over https"}},
			{"ArtifactFetched", []string{initrdArtifact + ":", "over https"}},
			{"PhoneHome", []string{mac + " phoned home"}},
		}
	}
	for _, c := range []struct {
		v             *vm
		name, mac, ip string
		first         step
	}{
		{vp, "https-pxe", macPXE, ipPXE, step{"TFTPTransfer", []string{".efi:"}}},
		{vh, "https-httpboot", macHTTP, ipHTTP, step{"HTTPBootFile", []string{"ipxe.efi over https:"}}},
	} {
		steps := append([]step{{"DHCPAck", []string{c.ip}}, c.first}, overHTTPS(c.mac)...)
		evs := waitTimeline(t, k, c.v, c.name, steps, bootTimeout)
		assertNetboot(t, c.v, c.name, evs, steps)
		for _, e := range evs {
			if (e.Type == "BootScript" || e.Type == "ArtifactFetched") && !strings.Contains(e.Message, "over https") {
				t.Errorf("machine %s: fetched over plain HTTP: %s", c.name, e)
			}
		}
	}
}

// TestNetbootUEFIHTTPSWrongCA: a man in the middle's view. The firmware trusts
// another CA than the one Kiln's boot certificate chains to (as it would trust the
// real Kiln while an attacker answers): iPXE must refuse the TLS connection, so Kiln
// serves no script and no artifact, and Kiln's log shows the refused handshake from
// the machine's address.
func TestNetbootUEFIHTTPSWrongCA(t *testing.T) {
	l := newLab(t)
	requireFiles(t, filepath.Join(trixieIPXEDir, "ipxe.efi"))
	k := startKiln(t, l, kilnOptions{dhcp: true, https: true, ipxeDirs: []string{trixieIPXEDir, "/usr/lib/ipxe"},
		extra: []string{"--boot-https", "efi"}})
	const mac, ip = "52:54:00:e2:e1:04", "10.77.0.34"
	k.apply(phoneHomeOverHTTP("full") + machineManifest("mitm-1", mac, ip))
	other := filepath.Join(l.dir, "other-ca.esl")
	writeForeignCASigList(t, other)

	v := startVM(t, l, vmConfig{Name: "mitm-1", MAC: mac, Firmware: firmwareUEFI, Extra: firmwareTrusts(other), Timeout: 120 * time.Second})
	// iPXE was loaded (TFTP) and tried HTTPS: the handshake failure is in Kiln's log.
	waitTimeline(t, k, v, "mitm-1", []step{{"DHCPAck", []string{ip}}, {"TFTPTransfer", []string{".efi:"}}}, bootTimeout)
	refused := "TLS handshake error from " + ip + ":"
	deadline := time.Now().Add(90 * time.Second)
	for !fileContains(filepath.Join(k.l.dir, "kiln.log"), refused) && !v.exited() && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	if !fileContains(filepath.Join(k.l.dir, "kiln.log"), refused) {
		t.Fatalf("Kiln's log has no %q: iPXE never tried HTTPS, so the test proves nothing", refused)
	}
	// Give a wrongly accepting iPXE the time to ask for the script anyway.
	time.Sleep(5 * time.Second)
	evs, err := k.events("mitm-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type == "BootScript" || e.Type == "ArtifactFetched" || e.Type == "PhoneHome" {
			t.Errorf("iPXE went on with an untrusted server: %s", e)
		}
	}
	t.Logf("timeline:\n%s", formatTimeline(evs))
}

// bootCASigList exports Kiln's boot CA as an EFI signature list with the CLI, as an
// operator would for firmware setup or a BMC.
func (k *kilnServer) bootCASigList() string {
	k.t.Helper()
	path := filepath.Join(k.l.dir, "kiln-boot-ca.esl")
	out, err := k.l.nsCommand(context.Background(), testkit.KilnBinary(k.t), "--data-dir", k.dataDir, "ca", "show", "--efi-siglist", path).CombinedOutput()
	if err != nil {
		k.t.Fatalf("kiln ca show --efi-siglist: %v\n%s", err, out)
	}
	k.t.Logf("%s", strings.TrimSpace(string(out)))
	return path
}

// writeForeignCASigList writes an RSA CA that is not Kiln's as an EFI signature list.
func writeForeignCASigList(t *testing.T, path string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Kiln boot CA (an attacker's)"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	list, err := efisig.X509List(der, efisig.KilnOwner())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, list, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileContains(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}
