package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
)

// assetDir holds vmlinuz and phone-home.cpio.gz (scripts/e2e-assets.sh); set by
// TestMain before any test runs.
var assetDir string

func TestMain(m *testing.M) {
	assetDir = os.Getenv("KILN_E2E_ASSETS")
	if assetDir == "" {
		assetDir = "../../.cache/e2e"
	}
	if abs, err := filepath.Abs(assetDir); err == nil {
		assetDir = abs
	}
	os.Exit(testkit.Main(m.Run))
}

// missingPrerequisite skips the test, or fails it in CI (testkit.Missing), naming
// the script that installs what these tests need.
func missingPrerequisite(t *testing.T, format string, args ...any) {
	t.Helper()
	testkit.Missing(t, "%s; scripts/e2e-assets.sh installs and builds what these tests need (then go test as root)", fmt.Sprintf(format, args...))
}

// requireLab checks what every netboot test needs.
func requireLab(t *testing.T) {
	t.Helper()
	testkit.Slow(t, "netboot end-to-end tests boot VMs")
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
	testkit.NeedFiles(t, files...)
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
