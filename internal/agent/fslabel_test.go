package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// mkfsImage makes a filesystem image with a real mkfs.
func mkfsImage(t *testing.T, dir, name string, size int64, mkfs string, args ...string) string {
	t.Helper()
	bin := testkit.NeedTool(t, mkfs, map[string]string{"mkfs.ext4": "e2fsprogs", "mkfs.fat": "dosfstools"}[mkfs])
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, append(args, p)...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", mkfs, err, out)
	}
	return p
}

// TestFSLabel reads labels from filesystems made by the real tools (ext4, FAT16,
// FAT32) and from XFS and btrfs superblocks laid out by hand.
func TestFSLabel(t *testing.T) {
	dir := t.TempDir()
	xfs := make([]byte, 4096)
	copy(xfs, "XFSB")
	copy(xfs[108:], "data")
	btrfs := make([]byte, 0x10000+0x12b+256)
	copy(btrfs[0x10040:], "_BHRfS_M")
	copy(btrfs[0x1012b:], "pool")
	os.WriteFile(filepath.Join(dir, "xfs"), xfs, 0o644)
	os.WriteFile(filepath.Join(dir, "btrfs"), btrfs, 0o644)
	os.WriteFile(filepath.Join(dir, "zero"), make([]byte, 1<<17), 0o644)
	cases := []struct {
		path, label, typ string
		ok               bool
	}{
		{mkfsImage(t, dir, "ext4", 8<<20, "mkfs.ext4", "-q", "-F", "-L", "cloudimg-rootfs"), "cloudimg-rootfs", "ext4", true},
		{mkfsImage(t, dir, "fat16", 32<<20, "mkfs.fat", "-F", "16", "-n", "EFI"), "EFI", "vfat", true},
		{mkfsImage(t, dir, "fat32", 64<<20, "mkfs.fat", "-F", "32", "-n", "BOOT"), "BOOT", "vfat", true},
		{mkfsImage(t, dir, "fatnolabel", 32<<20, "mkfs.fat", "-F", "16"), "", "vfat", true},
		{filepath.Join(dir, "xfs"), "data", "xfs", true},
		{filepath.Join(dir, "btrfs"), "pool", "btrfs", true},
		{filepath.Join(dir, "zero"), "", "", false},
	}
	for _, c := range cases {
		f, err := os.Open(c.path)
		if err != nil {
			t.Fatal(err)
		}
		l, typ, ok := fsLabel(f)
		f.Close()
		if l != c.label || typ != c.typ || ok != c.ok {
			t.Errorf("%s: %q %q %v, want %q %q %v", filepath.Base(c.path), l, typ, ok, c.label, c.typ, c.ok)
		}
	}
}

// TestFindFilesystemByLabel finds a partition by its filesystem's label among
// the partitions /sys lists (whole disks are not looked at), and refuses an
// ambiguous label.
func TestFindFilesystemByLabel(t *testing.T) {
	root := t.TempDir()
	for name, uevent := range map[string]string{
		"vda":  "DEVNAME=vda\nDEVTYPE=disk\n",
		"vda1": "DEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\n",
		"vda2": "DEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\n",
		"vdb1": "DEVNAME=vdb1\nDEVTYPE=partition\nPARTN=1\n",
		"vdc1": "DEVNAME=vdc1\nDEVTYPE=partition\nPARTN=1\n",
	} {
		mkfile(t, filepath.Join(root, "sys/class/block", name, "uevent"), uevent)
	}
	devs := filepath.Join(root, "dev")
	os.MkdirAll(devs, 0o755)
	mkfsImage(t, devs, "vda", 8<<20, "mkfs.ext4", "-q", "-F", "-L", "whole-disk")
	mkfsImage(t, devs, "vda1", 32<<20, "mkfs.fat", "-F", "16", "-n", "UEFI")
	mkfsImage(t, devs, "vda2", 8<<20, "mkfs.ext4", "-q", "-F", "-L", "cloudimg-rootfs")
	mkfsImage(t, devs, "vdb1", 8<<20, "mkfs.ext4", "-q", "-F", "-L", "data")
	mkfsImage(t, devs, "vdc1", 8<<20, "mkfs.ext4", "-q", "-F", "-L", "data")
	sys := &System{Root: root}
	ctx := context.Background()
	if d, typ, err := sys.findFilesystem(ctx, "cloudimg-rootfs"); err != nil || d != "/dev/vda2" || typ != "ext4" {
		t.Errorf("cloudimg-rootfs: %q %q %v", d, typ, err)
	}
	if d, typ, err := sys.findFilesystem(ctx, "UEFI"); err != nil || d != "/dev/vda1" || typ != "vfat" {
		t.Errorf("UEFI: %q %q %v", d, typ, err)
	}
	if _, _, err := sys.findFilesystem(ctx, "data"); err == nil || !strings.Contains(err.Error(), "give args.device") {
		t.Errorf("ambiguous label: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, _, err := sys.findFilesystem(short, "whole-disk"); err == nil {
		t.Error("a whole disk's filesystem was taken for a partition")
	}
}
