package agent

import (
	"bufio"
	"cmp"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// The facts' typed entries are agentwire's.
type (
	Disk = agentwire.Disk
	NIC  = agentwire.NIC
)

// MachineFacts is the agent's one fact collector: it reads the machine from /sys,
// /proc and /etc under root ("" or "/" for the real ones): DMI identity, CPUs,
// memory, kernel, hostname, OS, disks and NICs. What cannot be read is left out
// rather than failing the whole report.
func MachineFacts(root string) map[string]any {
	sys := &System{Root: root}
	f := map[string]any{"arch": goarchName()}
	dmi := map[string]any{}
	for key, file := range map[string]string{"uuid": "product_uuid", "serial": "product_serial", "vendor": "sys_vendor",
		"product": "product_name", "board_serial": "board_serial", "board_vendor": "board_vendor",
		"bios_version": "bios_version", "chassis_serial": "chassis_serial"} {
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
	if osr := osRelease(sys.path("/etc/os-release")); len(osr) > 0 {
		f["os"] = osr
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
		d.Serial = cmp.Or(readTrim(filepath.Join(dir, "device", "serial")),
			readTrim(filepath.Join(dir, "serial")), // virtio-blk
			readTrim(filepath.Join(dir, "device", "wwid")))
		if r, ok := sysInt(filepath.Join(dir, "queue", "rotational")); ok {
			d.Rotational = r == 1
		}
		if r, ok := sysInt(filepath.Join(dir, "removable")); ok {
			d.Removable = r == 1
		}
		d.SectorBytes, _ = sysInt(filepath.Join(dir, "queue", "logical_block_size"))
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Disk) int { return strings.Compare(a.Name, b.Name) })
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
	slices.SortFunc(out, func(a, b NIC) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Facts is what the agent reports: MachineFacts of the running system, with what
// only the running kernel can tell (interface addresses) and, where /proc could not
// be read, the CPU count and hostname as the Go runtime sees them.
func Facts() map[string]any {
	f := MachineFacts("")
	if _, ok := f["cpus"]; !ok {
		f["cpus"] = runtime.NumCPU()
	}
	if _, ok := f["hostname"]; !ok {
		if h, err := os.Hostname(); err == nil {
			f["hostname"] = h
		}
	}
	if ifs := interfaceAddresses(); len(ifs) > 0 {
		f["interfaces"] = ifs
	}
	return f
}

// interfaceAddresses lists the Ethernet interfaces with their MACs and addresses.
func interfaceAddresses() []any {
	list, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var ifs []any
	for _, i := range list {
		if i.Flags&net.FlagLoopback != 0 || len(i.HardwareAddr) != 6 {
			continue
		}
		e := map[string]any{"name": i.Name, "mac": i.HardwareAddr.String()}
		if addrs, err := i.Addrs(); err == nil {
			var as []any
			for _, a := range addrs {
				as = append(as, a.String())
			}
			if len(as) > 0 {
				e["addresses"] = as
			}
		}
		ifs = append(ifs, e)
	}
	return ifs
}

// osRelease reads the distribution's id, version and name from an os-release file.
func osRelease(p string) map[string]any {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	out := map[string]any{}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\n"), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			out["id"] = v
		case "VERSION_ID":
			out["version"] = v
		case "PRETTY_NAME":
			out["name"] = v
		}
	}
	return out
}
