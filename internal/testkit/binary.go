package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// BinaryEnv names an environment variable with a kiln binary to test instead of
// building one (a release build, or a static build for the e2e VMs).
const BinaryEnv = "KILN_TEST_BIN"

// The test process's one kiln binary. Package-level because a build is per test
// process, not per test: every test of a package shares it, and Main removes it.
var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Main runs m's tests and then removes the binary KilnBinary built. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testkit.Main(m.Run)) }
//
// run is m.Run, or a wrapper that also runs m (pgtest.Main).
func Main(run func() int) int {
	code := run()
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	return code
}

// KilnBinary is the path of the kiln binary: $KILN_TEST_BIN, or one built from
// this tree on first use (about 10 s on a loaded machine) and shared by the
// process's tests. A package that calls it needs TestMain with Main.
func KilnBinary(tb testing.TB) string {
	tb.Helper()
	binary.once.Do(func() {
		if binary.path = os.Getenv(BinaryEnv); binary.path != "" {
			return
		}
		binary.dir, binary.err = os.MkdirTemp("", "kiln-test-bin-")
		if binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "kiln")
		// By import path, so that it builds from any package's directory.
		cmd := exec.Command("go", "build", "-o", binary.path, "github.com/kilnhq/kiln/cmd/kiln")
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("build kiln: %w\n%s", err, out)
		}
	})
	if binary.err != nil {
		tb.Fatal(binary.err)
	}
	return binary.path
}
