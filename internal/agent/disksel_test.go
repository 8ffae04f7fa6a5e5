package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// TestDiskSelector picks among the disks facts report: an NVMe (960 GB, SSD),
// a SATA HDD (2 TB), a SATA SSD (240 GB) and a USB stick (removable, 16 GB).
func TestDiskSelector(t *testing.T) {
	disks := []Disk{
		{Name: "nvme0n1", Path: "/dev/nvme0n1", SizeBytes: 960e9, Model: "Dell Express Flash NVMe P4610", Serial: "PHLN0123"},
		{Name: "sda", Path: "/dev/sda", SizeBytes: 2e12, Model: "ST2000NM0055", Rotational: true},
		{Name: "sdb", Path: "/dev/sdb", SizeBytes: 240e9, Model: "SAMSUNG MZ7LH240", Serial: "S455NY0M"},
		{Name: "sdc", Path: "/dev/sdc", SizeBytes: 16e9, Model: "Cruzer Blade", Removable: true},
	}
	cases := []struct {
		sel  map[string]any
		want string // a disk name, or part of the error
	}{
		{map[string]any{}, "sdb"}, // smallest, the USB stick left out
		{map[string]any{"removable": true}, "sdc"},
		{map[string]any{"pick": "largest"}, "sda"},
		{map[string]any{"pick": "first"}, "nvme0n1"},
		{map[string]any{"type": "ssd", "pick": "largest"}, "nvme0n1"},
		{map[string]any{"type": "hdd"}, "sda"},
		{map[string]any{"type": "nvme"}, "nvme0n1"},
		{map[string]any{"minSize": "500G"}, "nvme0n1"},
		{map[string]any{"minSize": "500G", "maxSize": "1TB"}, "nvme0n1"},
		{map[string]any{"model": "samsung*"}, "sdb"},
		{map[string]any{"serial": "PHLN*"}, "nvme0n1"},
		{map[string]any{"type": "hdd", "maxSize": "1T"}, `no disk matches {"type":"hdd","maxSize":"1T"}; this machine has: nvme0n1 (960.0 GB, ssd, "Dell Express Flash NVMe P4610"); sda (2.0 TB, hdd`},
	}
	for _, c := range cases {
		sel, err := agentwire.ParseDiskSelector(c.sel)
		if err != nil {
			t.Fatalf("%v: %v", c.sel, err)
		}
		d, err := selectDisk(sel, disks)
		switch {
		case err != nil && !strings.Contains(err.Error(), c.want):
			t.Errorf("%v: %v, want %q", c.sel, err, c.want)
		case err != nil && !errors.Is(err, errPermanent):
			t.Errorf("%v: %v is not permanent (retrying cannot add a disk)", c.sel, err)
		case err == nil && d.Name != c.want:
			t.Errorf("%v: picked %s, want %s", c.sel, d.Name, c.want)
		}
	}
}

// TestActionDiskFromSelector: an action's "disk" argument given as a selector
// resolves against the machine's /sys; a path is used as given.
func TestActionDiskFromSelector(t *testing.T) {
	sys := &System{Root: fakeSysfs(t)}
	got, err := sys.disk(Args{"disk": map[string]any{"type": "hdd"}})
	if err != nil || got != "/dev/sda" {
		t.Fatalf("hdd selector: %q, %v", got, err)
	}
	got, err = sys.disk(Args{"disk": map[string]any{"type": "ssd", "pick": "largest"}})
	if err != nil || got != "/dev/nvme0n1" {
		t.Fatalf("ssd selector: %q, %v", got, err)
	}
	if got, err := sys.disk(Args{"disk": "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"}); err != nil || got != "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4" {
		t.Fatalf("a path: %q, %v", got, err)
	}
	if _, err := sys.disk(Args{"disk": map[string]any{"type": "ssd", "minSize": "10T"}}); err == nil || !strings.Contains(err.Error(), "no disk matches") {
		t.Fatalf("nothing matches: %v", err)
	}
	if _, err := sys.disk(Args{}); err == nil {
		t.Fatal("no disk argument: no error")
	}
}
