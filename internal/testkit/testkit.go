// Package testkit is what Kiln's tests share: a store with manifests loaded, the
// rule for tests that need root or a tool (skip outside CI, fail in CI), the kiln
// binary built once per test process, and `kiln serve` started on free ports.
//
// It is imported by _test.go files only; TestNotImportedByKiln keeps it so.
package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where `make test` has
// installed every prerequisite, so a missing one is a failure rather than a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing ends tb for a missing prerequisite: a skip outside CI, a failure in CI.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("missing prerequisite (CI=true, so this fails; make test installs it): %s", msg)
	}
	tb.Skipf("missing prerequisite: %s (make test installs it)", msg)
}

// Slow skips tb under -short: `make check` is the fast loop, `make test` runs all.
func Slow(tb testing.TB, why string) {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("skipped with -short: %s", why)
	}
}

// NeedRoot skips tb under -short, and otherwise ends it by Missing unless it runs
// as root (network namespaces, privileged ports, loop devices).
func NeedRoot(tb testing.TB, why string) {
	tb.Helper()
	Slow(tb, "needs root for "+why)
	if os.Geteuid() != 0 {
		Missing(tb, "root, for %s", why)
	}
}

// NeedTool finds a program on PATH and returns its path. pkg is the Debian
// package that has it, named in the message. Tests that run outside tools are
// skipped under -short.
func NeedTool(tb testing.TB, name, pkg string) string {
	tb.Helper()
	Slow(tb, "runs "+name)
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(tb, "%s on PATH (Debian package %s)", name, pkg)
	}
	return p
}

// NeedFiles ends tb by Missing unless every file exists.
func NeedFiles(tb testing.TB, files ...string) {
	tb.Helper()
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			Missing(tb, "%s", f)
		}
	}
}
