package agent

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const kilnModule = "github.com/kilnhq/kiln/"

// TestDependencies keeps the agent and the server apart (tailscale's tstest/deptest
// idea): what they say to each other is in agentwire, which imports nothing of Kiln;
// the agent imports agentwire and leaf packages only, and the server never imports
// the agent. A new import that breaks this fails here, naming it.
func TestDependencies(t *testing.T) {
	cases := []struct {
		pkg string
		// allowed are the Kiln packages pkg may depend on, directly or not.
		allowed []string
		// forbidden are Kiln packages pkg must not depend on; nil: only allowed.
		forbidden []string
	}{
		{pkg: "internal/agentwire", allowed: []string{"internal/agentwire"}},
		{pkg: "internal/agent", allowed: []string{"internal/agent", "internal/agentwire", "internal/atomicfile", "internal/verity"}},
		{pkg: "internal/server", forbidden: []string{"internal/agent"}},
	}
	for _, c := range cases {
		t.Run(c.pkg, func(t *testing.T) {
			for _, dep := range kilnDeps(t, kilnModule+c.pkg) {
				switch {
				case c.forbidden != nil && slices.Contains(c.forbidden, dep):
					t.Errorf("%s depends on %s, which it must not", c.pkg, dep)
				case c.forbidden == nil && !slices.Contains(c.allowed, dep):
					t.Errorf("%s depends on %s; it may depend only on %s", c.pkg, dep, strings.Join(c.allowed, ", "))
				}
			}
		})
	}
}

// kilnDeps lists the Kiln packages pkg depends on (itself included), relative to
// the module, as built for Linux (the agent's init is Linux only).
func kilnDeps(t *testing.T, pkg string) []string {
	t.Helper()
	cmd := exec.Command(goTool(t), "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	cmd.Env = append(os.Environ(), "GOOS=linux")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
	}
	var deps []string
	for line := range strings.Lines(string(out)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), kilnModule); ok {
			deps = append(deps, p)
		}
	}
	if len(deps) == 0 {
		t.Fatalf("go list -deps %s listed no Kiln package, not even itself:\n%s", pkg, out)
	}
	return deps
}

// goTool is the go command that runs this test: the one on PATH, else the one of the
// toolchain that built the test.
func goTool(t *testing.T) string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no go command on PATH nor in %s: the dependency test needs it", p)
	}
	return p
}
