package secrets

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
)

// The rendered configs pass the validators machines' own tools use: Debian's
// ignition-validate and cloud-init's schema check.
func TestRenderedConfigsPassRealValidators(t *testing.T) {
	ignitionValidate := testkit.NeedTool(t, "ignition-validate", "ignition")
	cloudInit := testkit.NeedTool(t, "cloud-init", "cloud-init")
	e := newFleet(t)
	dir := t.TempDir()
	for _, mode := range []Mode{ModeDeliver, ModePreview} {
		ign, err := render(e, "web-1", tIgnition, mode)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "config.ign")
		if err := os.WriteFile(path, ign.Content, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(ignitionValidate, path).CombinedOutput(); err != nil {
			t.Fatalf("ignition-validate (%s): %v\n%s", mode.channel(), err, out)
		}
		ud, err := render(e, "web-1", tUserData, mode)
		if err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(dir, "user-data")
		if err := os.WriteFile(path, ud.Content, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(cloudInit, "schema", "--config-file", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Valid cloud-config") {
			t.Fatalf("cloud-init schema (%s): %v\n%s\n%s", mode.channel(), err, out, ud.Content)
		}
	}
	// And the validators agree that a broken one is broken.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("#cloud-config\nhostname: [1, 2]\n"), 0o600)
	if err := exec.Command(cloudInit, "schema", "--config-file", bad).Run(); err == nil {
		t.Fatal("cloud-init schema accepted an invalid config: the check proves nothing")
	}
}
