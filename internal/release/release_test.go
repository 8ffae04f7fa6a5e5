package release

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/thirdparty"
)

// TestReleaseIsReproducibleAndVerifiable is `make release` in a test: it releases
// this checkout into one directory, builds linux/amd64 again from a copy of the
// checkout at another path into another directory and compares the bytes, then checks SHA256SUMS against the files, the SBOM's modules
// against what the binaries themselves record (`go version -m`), that the binaries
// are static, and what the host's binary says in `kiln version`.
//
// The second build shares the Go build cache with the first, so it proves that the
// build settings leave nothing of time, place or checkout in the binary (the copy's
// own packages compile again at their new path, everything links again); that the compiler's output is deterministic is the Go toolchain's own
// guarantee. Building one platform twice keeps the test near a minute on a warm
// cache; a cold cache (the first run on a machine) compiles everything for both.
func TestReleaseIsReproducibleAndVerifiable(t *testing.T) {
	testkit.Slow(t, "builds kiln three times")
	testkit.NeedTool(t, "git", "git")
	ctx := context.Background()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	src, err := Describe(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	a, err := Release(ctx, repo, src, dist)
	if err != nil {
		t.Fatal(err)
	}

	amd64 := thirdparty.Platform{OS: "linux", Arch: "amd64"}
	again, err := Build(ctx, copyCheckout(t, repo), src, amd64, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	first, second := readFile(t, filepath.Join(dist, BinaryName(src.Version, amd64))), readFile(t, again)
	if !bytes.Equal(first, second) {
		t.Fatalf("two builds of %s for %s differ (%d and %d bytes)", src.Version, amd64, len(first), len(second))
	}

	// SHA256SUMS: one line per other file in dist, each checksum right.
	listed := map[string]bool{}
	sums := bufio.NewScanner(bytes.NewReader(readFile(t, a.Sums)))
	for sums.Scan() {
		sum, name, ok := strings.Cut(sums.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not in sha256sum's format", sums.Text())
		}
		got, err := fileSHA256(filepath.Join(dist, name))
		if err != nil || got != sum {
			t.Errorf("SHA256SUMS: %s listed as %s, is %s (%v)", name, sum, got, err)
		}
		listed[name] = true
	}
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "SHA256SUMS" && !listed[e.Name()] {
			t.Errorf("%s is in the release but not in SHA256SUMS", e.Name())
		}
	}
	if len(listed) != len(Platforms())+1 {
		t.Errorf("SHA256SUMS lists %d files, want %d binaries and the SBOM", len(listed), len(Platforms()))
	}

	// The SBOM lists exactly the modules the binaries record as linked, with the
	// binaries' checksums.
	var doc spdxDocument
	if err := json.Unmarshal(readFile(t, a.SBOM), &doc); err != nil {
		t.Fatalf("SBOM: %v", err)
	}
	inSBOM := map[string]bool{}
	binarySums := map[string]string{}
	for _, p := range doc.Packages {
		switch {
		case strings.HasPrefix(p.SPDXID, "SPDXRef-Module-"):
			inSBOM[p.Name+"@"+p.VersionInfo] = true
		case strings.HasPrefix(p.SPDXID, "SPDXRef-Binary-"):
			binarySums[p.Name] = p.Checksums[0].ChecksumValue
		}
	}
	linked := map[string]bool{}
	for _, bin := range a.Binaries {
		info := goVersionM(t, bin)
		for _, want := range []string{"\tbuild\tCGO_ENABLED=0\n", "\tbuild\t-trimpath=true\n", "\tmod\tgithub.com/kilnhq/kiln\t"} {
			if !strings.Contains(info, want) {
				t.Errorf("%s: build info lacks %q:\n%s", filepath.Base(bin), strings.TrimSpace(want), info)
			}
		}
		for line := range strings.Lines(info) {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "dep" {
				linked[f[1]+"@"+f[2]] = true
			}
		}
		if sum, _ := fileSHA256(bin); binarySums[filepath.Base(bin)] != sum {
			t.Errorf("SBOM checksum of %s is %q, the file's %s", filepath.Base(bin), binarySums[filepath.Base(bin)], sum)
		}
		if interp := elfInterpreter(t, bin); interp {
			t.Errorf("%s has a dynamic loader (PT_INTERP): not static", filepath.Base(bin))
		}
	}
	if len(linked) == 0 || !maps.Equal(linked, inSBOM) {
		t.Errorf("SBOM modules differ from the binaries' own record:\nSBOM:   %v\nlinked: %v", slices.Sorted(maps.Keys(inSBOM)), slices.Sorted(maps.Keys(linked)))
	}

	if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		out, err := exec.Command(again, "version").Output()
		if err != nil {
			t.Fatalf("kiln version: %v", err)
		}
		lines := strings.Split(string(out), "\n")
		if lines[0] != "kiln "+src.Version || lines[1] != "commit: "+src.Commit || !strings.HasPrefix(lines[2], "go: go1.") {
			t.Errorf("kiln version printed %q, want version %s and commit %s", out, src.Version, src.Commit)
		}
	}
}

// copyCheckout copies the files git would commit (tracked, and untracked but not
// ignored, as they are in the working tree) to a new directory.
func copyCheckout(t *testing.T, repo string) string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dst := t.TempDir()
	for name := range strings.SplitSeq(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		data, err := os.ReadFile(filepath.Join(repo, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the working tree, not yet in the index
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// goVersionM is what the go command reads from a binary's embedded build info.
func goVersionM(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m %s: %v", bin, err)
	}
	return string(out)
}

func elfInterpreter(t *testing.T, bin string) bool {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("%s is not an ELF binary: %v", bin, err)
	}
	defer f.Close()
	return slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
}
