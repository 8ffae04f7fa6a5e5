package boot_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/resource"
)

// CheckSource is what a reprovision warns with: a local source that is not a regular
// file inside the artifact directory is named; a remote one is left to the fetch.
func TestCheckSource(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	for _, d := range []string{filepath.Join(dir, "install"), filepath.Join(dir, "agent")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(dir, "install", "disk.img.zst"), filepath.Join(outside, "vmlinuz")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A symlink out of the directory is not a file in it.
	if err := os.Symlink(filepath.Join(outside, "vmlinuz"), filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	a := &boot.ArtifactStore{Dir: dir}
	for _, tc := range []struct {
		source, want string // want: "" for no error, else a part of it
	}{
		{"install/disk.img.zst", ""},
		{filepath.Join(dir, "install", "disk.img.zst"), ""},
		{"https://deb.debian.org/debian/linux", ""},
		{"http://10.0.0.2/initrd.gz", ""},
		{"install/missing.img.zst", `source "install/missing.img.zst" is not in the artifact directory ` + dir},
		{"agent", `source "agent" is not a regular file`},
		{filepath.Join(outside, "vmlinuz"), "is outside the artifact directory"},
		{"../" + filepath.Base(outside) + "/vmlinuz", `source "../`},
		{"escape", `source "escape"`},
	} {
		err := a.CheckSource(&resource.ArtifactSpec{Source: tc.source})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckSource(%q): %v, want nil", tc.source, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckSource(%q): %v, want an error with %q", tc.source, err, tc.want)
		}
	}
	if err := (&boot.ArtifactStore{}).CheckSource(&resource.ArtifactSpec{Source: "vmlinuz"}); err == nil {
		t.Errorf("CheckSource without an artifact directory: nil, want an error")
	}
}
