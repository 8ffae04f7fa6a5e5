package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// fakeSysfs lays out the /sys and /proc files a small server shows: two CPUs, an
// NVMe and a SATA disk, a loop device (not a disk), two NICs (one the boot NIC, one
// without link), a bridge (no device: left out) and DMI identity.
func fakeSysfs(t *testing.T) string {
	root := t.TempDir()
	files := map[string]string{
		"sys/class/dmi/id/product_uuid":   "4c4c4544-0042-3510-8052-b4c04f595631\n",
		"sys/class/dmi/id/product_serial": "4B5RYY1\n",
		"sys/class/dmi/id/sys_vendor":     "Dell Inc.\n",
		"sys/class/dmi/id/product_name":   "PowerEdge R640\n",
		"sys/class/dmi/id/board_serial":   "To Be Filled By O.E.M.\n",
		"proc/cpuinfo": "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz\nphysical id\t: 0\n\n" +
			"processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz\nphysical id\t: 1\n\n",
		"proc/meminfo":                               "MemTotal:       65536000 kB\nMemFree:        1000 kB\n",
		"proc/cmdline":                               "initrd=kiln-agent-initrd console=ttyS0 BOOTIF=01-b4-96-91-00-00-01\n",
		"proc/sys/kernel/osrelease":                  "6.1.0-56-amd64\n",
		"sys/block/nvme0n1/size":                     "1875385008\n",
		"sys/block/nvme0n1/queue/rotational":         "0\n",
		"sys/block/nvme0n1/queue/logical_block_size": "512\n",
		"sys/block/nvme0n1/device/model":             "Dell Express Flash NVMe P4610 1.6TB SFF   \n",
		"sys/block/nvme0n1/device/serial":            "PHLN012345671P6AGN  \n",
		"sys/block/nvme0n1/removable":                "0\n",
		"sys/block/sda/size":                         "3907029168\n",
		"sys/block/sda/queue/rotational":             "1\n",
		"sys/block/sda/device/model":                 "ST2000NM0055\n",
		"sys/block/sda/device/wwid":                  "naa.5000c500a1b2c3d4\n",
		"sys/block/loop0/size":                       "0\n",
		"sys/class/net/eno1/address":                 "B4:96:91:00:00:01\n",
		"sys/class/net/eno1/carrier":                 "1\n",
		"sys/class/net/eno1/operstate":               "up\n",
		"sys/class/net/eno1/speed":                   "10000\n",
		"sys/class/net/eno1/mtu":                     "1500\n",
		"sys/class/net/eno2/address":                 "b4:96:91:00:00:02\n",
		"sys/class/net/eno2/carrier":                 "0\n",
		"sys/class/net/eno2/operstate":               "down\n",
		"sys/class/net/eno2/speed":                   "-1\n",
		"sys/class/net/br0/address":                  "02:00:00:00:00:01\n",
	}
	for p, c := range files {
		mkfile(t, filepath.Join(root, p), c)
	}
	os.MkdirAll(filepath.Join(root, "sys/bus/pci/drivers/ixgbe"), 0o755)
	for _, n := range []string{"eno1", "eno2"} {
		d := filepath.Join(root, "sys/devices", n)
		os.MkdirAll(d, 0o755)
		os.Symlink(filepath.Join(root, "sys/bus/pci/drivers/ixgbe"), filepath.Join(d, "driver"))
		os.Symlink(d, filepath.Join(root, "sys/class/net", n, "device"))
	}
	for _, n := range []string{"nvme0n1", "sda"} {
		os.MkdirAll(filepath.Join(root, "sys/block", n, "device"), 0o755)
	}
	return root
}

func TestMachineFacts(t *testing.T) {
	f := MachineFacts(fakeSysfs(t))
	b, _ := json.Marshal(f)
	var got struct {
		CPUs     int    `json:"cpus"`
		Sockets  int    `json:"cpu_sockets"`
		Model    string `json:"cpu_model"`
		MemoryMB int    `json:"memory_mb"`
		Kernel   string `json:"kernel"`
		BootMAC  string `json:"boot_mac"`
		DMI      map[string]string
		Disks    []Disk `json:"disks"`
		NICs     []NIC  `json:"nics"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.CPUs != 2 || got.Sockets != 2 || got.MemoryMB != 64000 || got.Kernel != "6.1.0-56-amd64" || got.BootMAC != "b4:96:91:00:00:01" ||
		got.Model != "Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz" {
		t.Errorf("facts %s", b)
	}
	wantDMI := map[string]string{"uuid": "4c4c4544-0042-3510-8052-b4c04f595631", "serial": "4B5RYY1", "vendor": "Dell Inc.", "product": "PowerEdge R640"}
	if len(got.DMI) != len(wantDMI) {
		t.Errorf("dmi %v (placeholders must be left out)", got.DMI)
	}
	for k, v := range wantDMI {
		if got.DMI[k] != v {
			t.Errorf("dmi.%s = %q, want %q", k, got.DMI[k], v)
		}
	}
	if len(got.Disks) != 2 {
		t.Fatalf("disks %+v", got.Disks)
	}
	nvme, sda := got.Disks[0], got.Disks[1]
	if nvme.Name != "nvme0n1" || nvme.SizeBytes != 1875385008*512 || nvme.Rotational || nvme.Model != "Dell Express Flash NVMe P4610 1.6TB SFF" || nvme.Serial != "PHLN012345671P6AGN" || nvme.SectorBytes != 512 {
		t.Errorf("nvme %+v", nvme)
	}
	if sda.Path != "/dev/sda" || !sda.Rotational || sda.Serial != "naa.5000c500a1b2c3d4" {
		t.Errorf("sda %+v", sda)
	}
	if len(got.NICs) != 2 {
		t.Fatalf("nics %+v", got.NICs)
	}
	e1, e2 := got.NICs[0], got.NICs[1]
	if e1.MAC != "b4:96:91:00:00:01" || e1.Driver != "ixgbe" || !e1.Link || e1.SpeedMbps != 10000 || !e1.Boot || e1.MTU != 1500 {
		t.Errorf("eno1 %+v", e1)
	}
	if e2.Link || e2.SpeedMbps != 0 || e2.Boot || e2.State != "down" {
		t.Errorf("eno2 %+v", e2)
	}
}

func TestFactsOfThisMachine(t *testing.T) {
	// Whatever this machine is, the report is JSON with the keys Kiln summarises.
	f := Facts()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cpus", "memory_mb", "disks", "nics"} {
		if _, ok := f[k]; !ok {
			t.Errorf("no %s in %s", k, b)
		}
	}
}

// TestMachineFactsKeepsEveryDMIKey: the agent's report once merged two collectors and
// the hardware one's "dmi" map replaced the other's whole, losing board_vendor. The one
// collector reads every DMI key either of them knew.
func TestMachineFactsKeepsEveryDMIKey(t *testing.T) {
	root := fakeSysfs(t)
	mkfile(t, filepath.Join(root, "sys/class/dmi/id/board_vendor"), "Dell Inc.\n")
	mkfile(t, filepath.Join(root, "sys/class/dmi/id/bios_version"), "2.19.1\n")
	dmi, _ := MachineFacts(root)["dmi"].(map[string]any)
	want := map[string]string{"uuid": "4c4c4544-0042-3510-8052-b4c04f595631", "serial": "4B5RYY1", "vendor": "Dell Inc.",
		"product": "PowerEdge R640", "board_vendor": "Dell Inc.", "bios_version": "2.19.1"}
	for k, v := range want {
		if dmi[k] != v {
			t.Errorf("dmi.%s = %v, want %q (dmi %v)", k, dmi[k], v, dmi)
		}
	}
}
