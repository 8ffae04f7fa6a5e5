package dhcp

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// TestClassifyOptions: the client class read from options 60, 77, 93, 97 and
// 175, including the short, empty and malformed forms firmware sends.
func TestClassifyOptions(t *testing.T) {
	opt := func(code uint8, v []byte) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.Option{Code: dhcpv4.GenericOptionCode(code), Value: dhcpv4.OptionGeneric{Data: v}})
	}
	cases := []struct {
		name    string
		mods    []dhcpv4.Modifier
		arch    Arch
		hasArch bool
		ipxe    bool
		uuid    string
	}{
		{"option 93, two bytes", []dhcpv4.Modifier{opt(93, []byte{0, 7})}, 7, true, false, ""},
		{"option 93, one byte: ignored", []dhcpv4.Modifier{opt(93, []byte{7})}, 0, false, false, ""},
		{"option 93 short, the vendor class has it", []dhcpv4.Modifier{opt(93, []byte{7}), opt(60, []byte("PXEClient:Arch:00016:UNDI:003016"))}, 16, true, false, ""},
		{"vendor class ending at the arch", []dhcpv4.Modifier{opt(60, []byte("PXEClient:Arch:00011"))}, 11, true, false, ""},
		{"vendor class with an empty arch", []dhcpv4.Modifier{opt(60, []byte("PXEClient:Arch:"))}, 0, false, false, ""},
		{"vendor class without Arch", []dhcpv4.Modifier{opt(60, []byte("PXEClient:UNDI:00007"))}, 0, false, false, ""},
		{"option 175 alone is iPXE", []dhcpv4.Modifier{opt(175, []byte{1, 1, 1})}, 0, false, true, ""},
		{"user class iPXE", []dhcpv4.Modifier{opt(77, []byte("iPXE"))}, 0, false, true, ""},
		{"user class iPXE, RFC 3004 form after another", []dhcpv4.Modifier{opt(77, []byte("\x03abc\x04iPXE"))}, 0, false, true, ""},
		{"user class, RFC 3004 form without iPXE", []dhcpv4.Modifier{opt(77, []byte("\x03abc\x04gPXE"))}, 0, false, false, ""},
		{"user class, a zero length", []dhcpv4.Modifier{opt(77, []byte("\x00\x04iPXE"))}, 0, false, false, ""},
		{"user class, a length past the end", []dhcpv4.Modifier{opt(77, []byte("\x09iPXE"))}, 0, false, false, ""},
		{"option 97", []dhcpv4.Modifier{opt(97, []byte{0, 1, 2})}, 0, false, false, "\x00\x01\x02"},
		{"option 97 empty", []dhcpv4.Modifier{opt(97, []byte{})}, 0, false, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1})}, c.mods...)...)
			if err != nil {
				t.Fatal(err)
			}
			got := classify(m)
			if got.Arch != c.arch || got.HasArch != c.hasArch || got.IPXE != c.ipxe || string(got.UUID) != c.uuid || (got.UUID == nil) != (c.uuid == "") {
				t.Errorf("classify = %+v, want arch %d (%v) ipxe %v uuid %q", got, c.arch, c.hasArch, c.ipxe, c.uuid)
			}
		})
	}
}
