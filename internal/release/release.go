// Package release builds Kiln's release artefacts: static kiln binaries for every
// release platform that are byte-identical however often and wherever they are built
// (same commit, same Go version), their SHA256SUMS, and an SPDX SBOM of the modules
// linked into them. `make release` runs it through tools/release into dist/.
package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/thirdparty"
)

// Platforms are the platforms a release is built for.
func Platforms() []thirdparty.Platform {
	return []thirdparty.Platform{{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"}}
}

// Source identifies what is released: the version from git tags, the commit, and
// the commit's time, which stands in for "now" wherever an artefact needs a time
// (the SBOM) so that building the same commit again gives the same bytes.
type Source struct {
	Version string
	Commit  string
	Time    time.Time
}

// Describe reads the Source of the git checkout at repoDir. The version is `git
// describe --tags` of the newest v-tag (v1.2.3, or v1.2.3-4-gabcdef012345 after
// it); without a tag it is v0.0.0-<short commit>. Uncommitted changes to tracked
// files add "-dirty": such a build cannot be reproduced from the commit.
func Describe(ctx context.Context, repoDir string) (Source, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = repoDir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), repoDir, err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(string(out)), nil
	}
	commit, err := git("rev-parse", "HEAD")
	if err != nil {
		return Source{}, err
	}
	secs, err := git("log", "-1", "--format=%ct", "HEAD")
	if err != nil {
		return Source{}, err
	}
	unix, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		return Source{}, fmt.Errorf("commit time %q of %s: %w", secs, commit, err)
	}
	status, err := git("status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return Source{}, err
	}
	version, err := git("describe", "--tags", "--match", "v[0-9]*", "--abbrev=12")
	if err != nil {
		// No release tag yet (describe fails on that, and only that, once HEAD exists).
		version = "v0.0.0-" + commit[:12]
	}
	if status != "" {
		version += "-dirty"
	}
	return Source{Version: version, Commit: commit, Time: time.Unix(unix, 0).UTC()}, nil
}

// BinaryName is the file name of the kiln binary for a platform.
func BinaryName(version string, p thirdparty.Platform) string {
	return fmt.Sprintf("kiln-%s-%s-%s", version, p.OS, p.Arch)
}

// Build builds kiln for p into outDir and returns the binary's path. The settings
// are what makes two builds byte-identical: CGO_ENABLED=0 (static, no host C
// toolchain in the binary), -trimpath (no local paths), -buildvcs=false (no
// checkout state; the commit is passed explicitly), -mod=readonly, the CPU level
// pinned (GOAMD64, GOARM64) rather than taken from the environment, and the
// symbol tables stripped (-s -w) to keep the download small.
func Build(ctx context.Context, repoDir string, src Source, p thirdparty.Platform, outDir string) (string, error) {
	out := filepath.Join(outDir, BinaryName(src.Version, p))
	ldflags := strings.Join([]string{
		"-s", "-w",
		"-X", "github.com/kilnhq/kiln/internal/cli.Version=" + src.Version,
		"-X", "github.com/kilnhq/kiln/internal/cli.Commit=" + src.Commit,
	}, " ")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-mod=readonly",
		"-ldflags", ldflags, "-o", out, thirdparty.MainPackage)
	cmd.Dir = repoDir
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Arch,
		"GOAMD64=v1", "GOARM64=v8.0", "GOFLAGS=", "GOEXPERIMENT=")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build kiln for %s: %w: %s", p, err, strings.TrimSpace(string(output)))
	}
	return out, nil
}

// Artefacts are the files Release wrote, by name.
type Artefacts struct {
	Binaries []string
	SBOM     string
	Sums     string
}

// Release builds every platform's binary into outDir, writes the SBOM
// (kiln-<version>.spdx.json) and SHA256SUMS over all of them, in the format
// `sha256sum -c` reads.
func Release(ctx context.Context, repoDir string, src Source, outDir string) (Artefacts, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return Artefacts{}, fmt.Errorf("create release directory %s: %w", outDir, err)
	}
	var a Artefacts
	var binaries []SBOMBinary
	for _, p := range Platforms() {
		path, err := Build(ctx, repoDir, src, p, outDir)
		if err != nil {
			return Artefacts{}, err
		}
		sum, err := fileSHA256(path)
		if err != nil {
			return Artefacts{}, err
		}
		a.Binaries = append(a.Binaries, path)
		binaries = append(binaries, SBOMBinary{Name: filepath.Base(path), SHA256: sum})
	}
	mods, err := thirdparty.LinkedModules(ctx, repoDir, Platforms())
	if err != nil {
		return Artefacts{}, err
	}
	licensed, err := thirdparty.InspectAll(mods)
	if err != nil {
		return Artefacts{}, fmt.Errorf("release %s: %w", src.Version, err)
	}
	goVersion, err := toolchainVersion(ctx)
	if err != nil {
		return Artefacts{}, err
	}
	sbom, err := SBOM(src, goVersion, binaries, licensed)
	if err != nil {
		return Artefacts{}, err
	}
	a.SBOM = filepath.Join(outDir, "kiln-"+src.Version+".spdx.json")
	if err := os.WriteFile(a.SBOM, sbom, 0o644); err != nil {
		return Artefacts{}, fmt.Errorf("write SBOM: %w", err)
	}
	var sums bytes.Buffer
	for _, path := range append(slices.Clone(a.Binaries), a.SBOM) {
		sum, err := fileSHA256(path)
		if err != nil {
			return Artefacts{}, err
		}
		fmt.Fprintf(&sums, "%s  %s\n", sum, filepath.Base(path))
	}
	a.Sums = filepath.Join(outDir, "SHA256SUMS")
	if err := os.WriteFile(a.Sums, sums.Bytes(), 0o644); err != nil {
		return Artefacts{}, fmt.Errorf("write SHA256SUMS: %w", err)
	}
	return a, nil
}

func fileSHA256(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("checksum %s: %w", path, err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// toolchainVersion is the version of the go command that builds the binaries
// (go1.26.8), which the SBOM records for the standard library.
func toolchainVersion(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
