package agent

import (
	"net"
	"strings"
)

// Cmdline is a parsed kernel command line: each parameter's value by name (the
// last one wins, as the kernel's own parsing does); flags without "=" map to "".
type Cmdline map[string]string

// ParseCmdline splits a kernel command line the way the kernel does
// (lib/cmdline.c, next_arg): parameters are separated by spaces, and double quotes
// group spaces into a value and are removed: kiln.msg="a b" is "a b".
func ParseCmdline(s string) Cmdline {
	c := Cmdline{}
	var cur strings.Builder
	inQuote, have := false, false
	flush := func() {
		if have {
			k, v, _ := strings.Cut(cur.String(), "=")
			if k != "" {
				c[k] = v
			}
		}
		cur.Reset()
		have = false
	}
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == 0):
			flush()
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	flush()
	return c
}

// BootMAC is the MAC of the NIC the machine netbooted from, from BOOTIF=01-aa-bb-
// cc-dd-ee-ff (the pxelinux convention iPXE follows with BOOTIF=01-${mac:hexhyp}:
// "01" is the ARP hardware type, Ethernet). "" when absent or malformed.
func (c Cmdline) BootMAC() string {
	v, ok := c["BOOTIF"]
	if !ok {
		return ""
	}
	v = strings.ToLower(strings.ReplaceAll(v, ":", "-"))
	if len(v) == 20 && strings.HasPrefix(v, "01-") {
		v = v[3:]
	}
	hw, err := net.ParseMAC(strings.ReplaceAll(v, "-", ":"))
	if err != nil || len(hw) != 6 {
		return ""
	}
	return hw.String()
}
