// Package thirdparty knows what other people's code is linked into the kiln binary
// and under which licences: it lists the Go modules a build of ./cmd/kiln links,
// classifies their licence files by text, refuses licences Kiln cannot ship under
// Apache-2.0 (GPL, LGPL, AGPL, anything it does not recognise), and renders
// THIRD_PARTY_NOTICES. The release tooling uses the same module list for the SBOM,
// so the notices and the SBOM always describe the same code.
package thirdparty

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// MainPackage is the package whose linked modules are listed: the kiln binary.
const MainPackage = "./cmd/kiln"

// Platform is a GOOS/GOARCH pair a release is built for. Build tags make the set of
// linked packages depend on it, so modules are listed per platform and merged.
type Platform struct {
	OS, Arch string
}

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// Module is one module linked into the binary. Dir is where its source is in the
// module cache (never written to the notices: it differs from machine to machine).
type Module struct {
	Path    string
	Version string
	Dir     string
}

// LinkedModules lists the modules (other than the main module) that a CGO-free build
// of MainPackage in repoDir links for any of the platforms, sorted by path. It asks
// `go list -deps`, not `go list -m all`: the module graph also holds test-only and
// unused modules that never reach a user.
func LinkedModules(ctx context.Context, repoDir string, platforms []Platform) ([]Module, error) {
	byPath := map[string]Module{}
	for _, p := range platforms {
		cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-mod=readonly",
			"-f", "{{with .Module}}{{if not .Main}}{{.Path}}\t{{.Version}}\t{{.Dir}}{{end}}{{end}}", MainPackage)
		cmd.Dir = repoDir
		cmd.Env = append(cmd.Environ(), "GOOS="+p.OS, "GOARCH="+p.Arch, "CGO_ENABLED=0", "GOFLAGS=")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("list modules linked into %s for %s: %w: %s", MainPackage, p, err, strings.TrimSpace(stderr.String()))
		}
		for line := range strings.Lines(string(out)) {
			fields := strings.Split(strings.TrimRight(line, "\n"), "\t")
			if len(fields) != 3 {
				continue // packages of the main module and the standard library print nothing
			}
			m := Module{Path: fields[0], Version: fields[1], Dir: fields[2]}
			if m.Dir == "" {
				return nil, fmt.Errorf("module %s %s is not in the module cache (run go mod download)", m.Path, m.Version)
			}
			if old, ok := byPath[m.Path]; ok && old.Version != m.Version {
				return nil, fmt.Errorf("module %s: version %s for one platform, %s for another", m.Path, old.Version, m.Version)
			}
			byPath[m.Path] = m
		}
	}
	mods := make([]Module, 0, len(byPath))
	for _, m := range byPath {
		mods = append(mods, m)
	}
	slices.SortFunc(mods, func(a, b Module) int { return strings.Compare(a.Path, b.Path) })
	return mods, nil
}

// GoRoot is the standard library's directory, whose LICENSE covers the runtime and
// standard packages linked into every Go binary.
func GoRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOROOT: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
