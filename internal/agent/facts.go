package agent

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
)

// Disk is a block device as facts report it.
type Disk struct {
	Name        string `json:"name"`
	Path        string `json:"path"`
	SizeBytes   int64  `json:"size_bytes"`
	Model       string `json:"model,omitempty"`
	Serial      string `json:"serial,omitempty"`
	Rotational  bool   `json:"rotational"`
	Removable   bool   `json:"removable,omitempty"`
	SectorBytes int64  `json:"logical_sector_bytes,omitempty"`
}

// NIC is a network interface as facts report it.
type NIC struct {
	Name      string `json:"name"`
	MAC       string `json:"mac"`
	Driver    string `json:"driver,omitempty"`
	Link      bool   `json:"link"`
	State     string `json:"operstate,omitempty"`
	SpeedMbps int64  `json:"speed_mbps,omitempty"`
	MTU       int64  `json:"mtu,omitempty"`
	Boot      bool   `json:"boot,omitempty"` // the NIC the machine netbooted from (BOOTIF)
}

// MachineFacts reads the machine's hardware from /sys and /proc under root ("" or
// "/" for the real ones): DMI identity, CPUs, memory, disks and NICs. What cannot be
// read is left out rather than failing the whole report.
func MachineFacts(root string) map[string]any {
	sys := &System{Root: root}
	f := map[string]any{"arch": goarchName()}
	dmi := map[string]any{}
	for key, file := range map[string]string{"uuid": "product_uuid", "serial": "product_serial", "vendor": "sys_vendor",
		"product": "product_name", "board_serial": "board_serial", "bios_version": "bios_version", "chassis_serial": "chassis_serial"} {
		if v := readTrim(sys.path("/sys/class/dmi/id/" + file)); v != "" && !placeholder(v) {
			dmi[key] = v
		}
	}
	if len(dmi) > 0 {
		f["dmi"] = dmi
	}
	if cpus, model, sockets := cpuInfo(sys.path("/proc/cpuinfo")); cpus > 0 {
		f["cpus"] = cpus
		if model != "" {
			f["cpu_model"] = model
		}
		if sockets > 0 {
			f["cpu_sockets"] = sockets
		}
	}
	if kb := meminfoKB(sys.path("/proc/meminfo"), "MemTotal:"); kb > 0 {
		f["memory_mb"] = kb / 1024
	}
	if v := readTrim(sys.path("/proc/sys/kernel/osrelease")); v != "" {
		f["kernel"] = v
	}
	if v := readTrim(sys.path("/proc/sys/kernel/hostname")); v != "" {
		f["hostname"] = v
	}
	bootMAC := ""
	if b, err := os.ReadFile(sys.path("/proc/cmdline")); err == nil {
		bootMAC = ParseCmdline(string(b)).BootMAC()
		if bootMAC != "" {
			f["boot_mac"] = bootMAC
		}
	}
	disks := []any{}
	for _, d := range blockDisks(sys) {
		disks = append(disks, d)
	}
	f["disks"] = disks
	nics := []any{}
	for _, n := range physicalNICs(sys, bootMAC) {
		nics = append(nics, n)
	}
	f["nics"] = nics
	return f
}

func goarchName() string {
	if runtime.GOARCH == "amd64" {
		return "x86_64"
	}
	return runtime.GOARCH
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// placeholder recognises the filler firmware writes where a value is unset.
func placeholder(v string) bool {
	switch strings.ToLower(v) {
	case "to be filled by o.e.m.", "default string", "not specified", "system serial number", "none", "0", "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff":
		return true
	}
	return false
}

func cpuInfo(p string) (cpus int, model string, sockets int) {
	fh, err := os.Open(p)
	if err != nil {
		return 0, "", 0
	}
	defer fh.Close()
	ids := map[string]bool{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			cpus++
		case "model name":
			if model == "" {
				model = v
			}
		case "physical id":
			ids[v] = true
		}
	}
	return cpus, model, len(ids)
}

func meminfoKB(p, key string) int64 {
	fh, err := os.Open(p)
	if err != nil {
		return 0
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == key {
			n, _ := strconv.ParseInt(fs[1], 10, 64)
			return n
		}
	}
	return 0
}

// blockDisks lists whole disks: entries of /sys/block backed by a device (loop,
// ram, zram, device-mapper and md have none) except optical drives.
func blockDisks(sys *System) []Disk {
	entries, _ := os.ReadDir(sys.path("/sys/block"))
	var out []Disk
	for _, e := range entries {
		name := e.Name()
		dir := sys.path("/sys/block/" + name)
		if _, err := os.Stat(filepath.Join(dir, "device")); err != nil {
			continue
		}
		if strings.HasPrefix(name, "sr") || strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") {
			continue
		}
		sectors, _ := sysInt(filepath.Join(dir, "size"))
		d := Disk{Name: name, Path: "/dev/" + name, SizeBytes: sectors * 512}
		d.Model = readTrim(filepath.Join(dir, "device", "model"))
		d.Serial = readTrim(filepath.Join(dir, "device", "serial"))
		if d.Serial == "" {
			d.Serial = readTrim(filepath.Join(dir, "serial")) // virtio-blk
		}
		if d.Serial == "" {
			d.Serial = readTrim(filepath.Join(dir, "device", "wwid"))
		}
		if r, ok := sysInt(filepath.Join(dir, "queue", "rotational")); ok {
			d.Rotational = r == 1
		}
		if r, ok := sysInt(filepath.Join(dir, "removable")); ok {
			d.Removable = r == 1
		}
		d.SectorBytes, _ = sysInt(filepath.Join(dir, "queue", "logical_block_size"))
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// physicalNICs lists interfaces backed by a device (not lo, bridges, veth, tun).
func physicalNICs(sys *System, bootMAC string) []NIC {
	entries, _ := os.ReadDir(sys.path("/sys/class/net"))
	var out []NIC
	for _, e := range entries {
		dir := sys.path("/sys/class/net/" + e.Name())
		if _, err := os.Stat(filepath.Join(dir, "device")); err != nil {
			continue
		}
		n := NIC{Name: e.Name(), MAC: strings.ToLower(readTrim(filepath.Join(dir, "address")))}
		if l, err := os.Readlink(filepath.Join(dir, "device", "driver")); err == nil {
			n.Driver = filepath.Base(l)
		}
		n.State = readTrim(filepath.Join(dir, "operstate"))
		if c, ok := sysInt(filepath.Join(dir, "carrier")); ok {
			n.Link = c == 1
		}
		if s, ok := sysInt(filepath.Join(dir, "speed")); ok && s > 0 {
			n.SpeedMbps = s
		}
		n.MTU, _ = sysInt(filepath.Join(dir, "mtu"))
		n.Boot = bootMAC != "" && n.MAC == bootMAC
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Facts is what the agent reports: the enrollment facts (CollectFacts: hostname,
// addresses, OS) with the hardware of MachineFacts over them.
func Facts() map[string]any {
	f := CollectFacts()
	for k, v := range MachineFacts("") {
		f[k] = v
	}
	return f
}
