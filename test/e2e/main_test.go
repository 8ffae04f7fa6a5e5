package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var (
	// kilnBin is the binary under test, built once by TestMain.
	kilnBin string
	// assetDir holds vmlinuz and phone-home.cpio.gz (scripts/e2e-assets.sh).
	assetDir string
	// kilnServeHelp is `kiln serve --help`, to tell which boot flags this build has.
	kilnServeHelp string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kiln-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// KILN_E2E_BIN: test a binary built elsewhere (a release build, or a snapshot
	// while the tree is mid-edit).
	if kilnBin = os.Getenv("KILN_E2E_BIN"); kilnBin == "" {
		kilnBin = filepath.Join(dir, "kiln")
		build := exec.Command("go", "build", "-o", kilnBin, "../../cmd/kiln")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: build kiln:", err)
			return 1
		}
	}
	out, _ := exec.Command(kilnBin, "serve", "--help").CombinedOutput()
	kilnServeHelp = string(out)

	assetDir = os.Getenv("KILN_E2E_ASSETS")
	if assetDir == "" {
		assetDir = "../../.cache/e2e"
	}
	if abs, err := filepath.Abs(assetDir); err == nil {
		assetDir = abs
	}
	return m.Run()
}

// inCI: `make test` and CI install every prerequisite (scripts/e2e-assets.sh), so
// there a missing one is a failure, not a skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// missingPrerequisite skips the test, or fails it in CI.
func missingPrerequisite(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("missing prerequisite (CI=true, so this fails): %s; scripts/e2e-assets.sh installs and builds what these tests need", msg)
	}
	t.Skipf("missing prerequisite: %s (run scripts/e2e-assets.sh as root, then go test as root)", msg)
}

// requireLab checks what every netboot test needs.
func requireLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("netboot end-to-end tests boot VMs; skipped with -short")
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces, tap devices)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "/dev/net/tun")
	}
	for _, tool := range []string{"ip", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" on PATH")
		}
	}
	for _, f := range []string{
		filepath.Join(assetDir, "vmlinuz"),
		filepath.Join(assetDir, "phone-home.cpio.gz"),
		"/usr/lib/ipxe/qemu/efi-virtio.rom", // ipxe-qemu: virtio-net's option ROM
	} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		missingPrerequisite(t, "%s", strings.Join(missing, ", "))
	}
}

// requireFiles checks files a scenario needs beyond requireLab's.
func requireFiles(t *testing.T, files ...string) {
	t.Helper()
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			missingPrerequisite(t, "%s", f)
		}
	}
}

// requireTools checks programs a scenario needs beyond requireLab's.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missingPrerequisite(t, "%s on PATH", tool)
		}
	}
}

// requireKilnDHCP skips scenarios where Kiln itself answers DHCP and TFTP until
// `kiln serve` has those flags. This is a missing feature of the build under test,
// not of the machine, so it skips in CI too.
func requireKilnDHCP(t *testing.T) {
	t.Helper()
	for _, flag := range []string{"--dhcp-interface", "--tftp-listen", "--public-url"} {
		if !strings.Contains(kilnServeHelp, flag) {
			t.Skipf("kiln serve has no %s flag in this build: Kiln's DHCP/TFTP is not wired into serve yet", flag)
		}
	}
}
