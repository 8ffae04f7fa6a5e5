// Package doctor checks a host for what kiln serve needs, before and while it
// serves: listen ports, interfaces and their addresses, the interfaces Subnets
// name, iPXE binaries, the KEK file's mode, certificate expiry, and another DHCP
// server answering on the segment (the classic outage: two servers offering
// addresses on one network). Each check returns Findings that say what to fix.
package doctor

import (
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
)

// Status is how bad a finding is.
type Status int

// Statuses, in increasing severity.
const (
	OK Status = iota
	Warn
	Fail
)

func (s Status) String() string {
	return [...]string{"ok", "warn", "FAIL"}[s]
}

// Finding is one check's result; Fix says what to do when Status is not OK.
type Finding struct {
	Check  string
	Status Status
	Detail string
	Fix    string
}

// Report writes findings one per line (with the fix indented under it) and
// returns the worst status.
func Report(w io.Writer, findings []Finding) Status {
	worst := OK
	for _, f := range findings {
		fmt.Fprintf(w, "%-4s  %s: %s\n", f.Status, f.Check, f.Detail)
		if f.Status != OK && f.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", f.Fix)
		}
		worst = max(worst, f.Status)
	}
	return worst
}

// CheckTCPPort reports whether addr can be bound for TCP. A port in use is only a
// warning: on a host where kiln serve runs it is Kiln's own.
func CheckTCPPort(what, addr string) Finding {
	f := Finding{Check: "port " + what}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		f.Status, f.Detail = Warn, fmt.Sprintf("TCP %s cannot be bound: %v", addr, err)
		f.Fix = "if kiln serve is not running here, stop what holds the port (ss -ltnp) or choose another address"
		return f
	}
	ln.Close()
	f.Detail = "TCP " + addr + " is free"
	return f
}

// CheckUDPPort is CheckTCPPort for UDP (TFTP, DHCP).
func CheckUDPPort(what, addr string) Finding {
	f := Finding{Check: "port " + what}
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		f.Status, f.Detail = Warn, fmt.Sprintf("UDP %s cannot be bound: %v", addr, err)
		f.Fix = "if kiln serve is not running here, stop what holds the port (ss -lunp: another DHCP or TFTP server?) or run as root / with CAP_NET_BIND_SERVICE"
		return f
	}
	c.Close()
	f.Detail = "UDP " + addr + " is free"
	return f
}

// CheckInterface reports whether the interface exists, is up and has an IPv4
// address to answer DHCP from.
func CheckInterface(name string) Finding {
	f := Finding{Check: "interface " + name}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		f.Status, f.Detail, f.Fix = Fail, fmt.Sprintf("not found: %v", err), "name an existing interface (ip -br link) in --dhcp-interface and the Subnets' interfaces"
		return f
	}
	var v4 []string
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			v4 = append(v4, ipn.String())
		}
	}
	switch {
	case ifi.Flags&net.FlagUp == 0:
		f.Status, f.Detail, f.Fix = Fail, "down", "ip link set "+name+" up"
	case len(v4) == 0:
		f.Status, f.Detail, f.Fix = Fail, "up but without an IPv4 address: DHCP replies need one", "give it an address in the Subnet's CIDR (ip addr add ... dev "+name+")"
	default:
		f.Detail = "up, " + strings.Join(v4, ", ")
	}
	return f
}

// CheckSubnetInterfaces reports Subnets that name interfaces this host lacks.
// subnets maps a Subnet's name to its spec.interfaces.
func CheckSubnetInterfaces(subnets map[string][]string) []Finding {
	var out []Finding
	for _, name := range slices.Sorted(maps.Keys(subnets)) {
		for _, iface := range subnets[name] {
			f := Finding{Check: "subnet " + name}
			if _, err := net.InterfaceByName(iface); err != nil {
				f.Status, f.Detail = Fail, fmt.Sprintf("names interface %s, which this host does not have", iface)
				f.Fix = "fix spec.interfaces of Subnet " + name + " or run Kiln on the host attached to that network"
			} else {
				f.Detail = "interface " + iface + " exists"
			}
			out = append(out, f)
		}
	}
	return out
}

// ensureDir is whether path is a directory.
func ensureDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
