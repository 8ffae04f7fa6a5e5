package dhcp

import (
	"bytes"
	"fmt"
	"net"
	"reflect"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// wireHeader is a BOOTREQUEST's fixed part and magic cookie with every field set
// to a value that shows which byte went where: xid, secs, flags, the four
// addresses, a 16-byte chaddr field and NUL-padded sname and file fields.
func wireHeader(hlen byte) []byte {
	b := make([]byte, optionsStart)
	b[0], b[1], b[2], b[3] = 1, 1, hlen, 3
	copy(b[4:8], []byte{0xde, 0xad, 0xbe, 0xef})
	b[8], b[9] = 0x12, 0x34   // secs
	b[10], b[11] = 0x80, 0x01 // flags
	copy(b[12:28], []byte{10, 0, 0, 1, 10, 0, 0, 2, 10, 0, 0, 3, 10, 0, 0, 4})
	for i := range 16 {
		b[28+i] = byte(0xa0 + i)
	}
	copy(b[44:], "kiln-server")
	copy(b[108:], "boot/ipxe.efi")
	copy(b[236:], magicCookie[:])
	return b
}

// TestDecodePacketMatchesLibrary: the server's decoder reads exactly what
// dhcpv4.FromBytes reads, and refuses what it refuses, for the wire forms the
// fuzz seeds do not carry: no options at all, padding, hardware address lengths
// past 16, sname and file without a NUL, an option split over several instances
// (RFC 3396), empty options, truncation at each point.
func TestDecodePacketMatchesLibrary(t *testing.T) {
	full := func(field int) []byte { // a header whose sname (64) or file (128) has no NUL
		b := wireHeader(6)
		for i := range field {
			b[map[int]int{64: 44, 128: 108}[field]+i] = 'a' + byte(i%26)
		}
		return b
	}
	opts := func(h []byte, o ...byte) []byte { return append(bytes.Clone(h), o...) }
	h := wireHeader(6)
	cases := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"header only", h, true},
		{"one byte short of the header", h[:optionsStart-1], false},
		{"end only", opts(h, 255), true},
		{"padding before and after options", opts(h, 0, 0, 53, 1, 1, 0, 12, 2, 'h', 'i', 0, 255, 0, 0), true},
		{"bytes after end are ignored", opts(h, 53, 1, 1, 255, 7, 7, 7), true},
		{"an option split in three (RFC 3396)", opts(h, 53, 1, 1, 12, 2, 'a', 'b', 60, 1, 'x', 12, 1, 'c', 12, 3, 'd', 'e', 'f', 255), true},
		{"an empty option", opts(h, 53, 1, 1, 77, 0, 255), true},
		{"an empty option repeated, then a value", opts(h, 77, 0, 77, 0, 77, 2, 'o', 'k', 255), true},
		{"a value, then the option empty", opts(h, 77, 2, 'o', 'k', 77, 0, 255), true},
		{"option filling the datagram, no end", opts(h, 12, 3, 'a', 'b', 'c'), false},
		{"length byte missing", opts(h, 53, 1, 1, 12), false},
		{"value one byte short", opts(h, 12, 4, 'a', 'b', 'c'), false},
		{"no end", opts(h, 53, 1, 1), false},
		{"only padding", opts(h, 0, 0, 0), false},
		{"hlen 0", opts(wireHeader(0), 255), true},
		{"hlen 16", opts(wireHeader(16), 255), true},
		{"hlen 17: chaddr capped at 16", opts(wireHeader(17), 255), true},
		{"hlen 255", opts(wireHeader(255), 255), true},
		{"sname without NUL", opts(full(64), 255), true},
		{"file without NUL", opts(full(128), 255), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, werr := dhcpv4.FromBytes(tc.b)
			got, gerr := decodePacket(tc.b)
			if (gerr == nil) != tc.ok || (werr == nil) != tc.ok {
				t.Fatalf("decodePacket error %v, FromBytes error %v; want ok=%v", gerr, werr, tc.ok)
			}
			if !tc.ok {
				if got != nil {
					t.Fatal("a message with the error")
				}
				return
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decodePacket differs from FromBytes:\n%+v\n%+v", got, want)
			}
		})
	}

	// The fields are where RFC 2131 puts them (not only equal to the library's).
	m, err := decodePacket(append(bytes.Clone(h), 53, 1, 1, 12, 2, 'a', 'b', 12, 1, 'c', 255))
	if err != nil {
		t.Fatal(err)
	}
	if m.NumSeconds != 0x1234 || m.Flags != 0x8001 || m.HopCount != 3 || m.TransactionID != [4]byte{0xde, 0xad, 0xbe, 0xef} ||
		m.ClientIPAddr.String() != "10.0.0.1" || m.YourIPAddr.String() != "10.0.0.2" || m.ServerIPAddr.String() != "10.0.0.3" ||
		m.GatewayIPAddr.String() != "10.0.0.4" || m.ClientHWAddr.String() != "a0:a1:a2:a3:a4:a5" ||
		m.ServerHostName != "kiln-server" || m.BootFileName != "boot/ipxe.efi" {
		t.Errorf("fields: %+v", m)
	}
	if got := string(m.Options.Get(dhcpv4.OptionHostName)); got != "abc" {
		t.Errorf("host name from two instances = %q, want abc", got)
	}
	if m, _ := decodePacket(append(wireHeader(17), 255)); len(m.ClientHWAddr) != 16 {
		t.Errorf("hlen 17: chaddr of %d bytes, want the field's 16", len(m.ClientHWAddr))
	}
}

// TestAppendPacketMatchesLibrary: the server's encoder writes what
// dhcpv4.ToBytes writes for replies the handler tests do not produce: options in
// code order whatever the map's order, option 82 after every other option, empty
// options, a value longer than 255 bytes split into instances (RFC 3396),
// address fields that are unset or IPv6, over-long sname, file and chaddr,
// padding to 300 bytes or none when longer.
func TestAppendPacketMatchesLibrary(t *testing.T) {
	long := bytes.Repeat([]byte("0123456789"), 60) // 600 bytes: three instances
	base := func(mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithReply(&dhcpv4.DHCPv4{OpCode: dhcpv4.OpcodeBootRequest,
			ClientHWAddr: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x0a}, TransactionID: dhcpv4.TransactionID{1, 2, 3, 4}})}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	generic := func(code uint8, v []byte) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.Option{Code: dhcpv4.GenericOptionCode(code), Value: dhcpv4.OptionGeneric{Data: v}})
	}
	many := []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck)}
	for _, c := range []uint8{250, 3, 200, 1, 128, 6, 66, 67, 2, 43, 199, 4, 12, 254, 5} {
		many = append(many, generic(c, []byte{c}))
	}
	cases := []struct {
		name string
		m    *dhcpv4.DHCPv4
	}{
		{"no options but the type", base(dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer))},
		{"many options, codes unordered", base(many...)},
		{"relay agent information goes last", base(generic(82, []byte{1, 2, 'a', 'b'}), generic(250, []byte{1}), generic(1, []byte{2}))},
		{"relay agent information alone", base(generic(82, []byte{1, 1, 'x'}))},
		{"an empty option", base(generic(77, nil), generic(3, []byte{10, 0, 0, 1}))},
		{"a 255-byte value", base(generic(43, long[:255]))},
		{"a 256-byte value", base(generic(43, long[:256]))},
		{"a 600-byte value", base(generic(43, long))},
		{"long enough not to need padding", base(generic(43, long[:200]), generic(60, long[:100]))},
		{"sname and file at and past their size", base(dhcpv4.WithServerIP(net.IPv4(10, 0, 0, 9)), func(m *dhcpv4.DHCPv4) {
			m.ServerHostName = string(long[:64])
			m.BootFileName = string(long[:140])
		})},
		{"sname and file one short of their limits", base(func(m *dhcpv4.DHCPv4) {
			m.ServerHostName = string(long[:63])
			m.BootFileName = string(long[:127])
		})},
		{"a 16-byte chaddr", base(func(m *dhcpv4.DHCPv4) { m.ClientHWAddr = bytes.Repeat([]byte{0xab}, 16) })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.m.ToBytes()
			got := appendPacket([]byte("prefix"), tc.m)
			if string(got[:6]) != "prefix" || !bytes.Equal(got[6:], want) {
				t.Fatalf("appendPacket differs from ToBytes:\n%x\n%x", got[6:], want)
			}
			if len(got)-6 < bootpMinLen {
				t.Fatalf("%d bytes: shorter than BOOTP's %d", len(got)-6, bootpMinLen)
			}
		})
	}

	// What ToBytes does is what RFC 3046 and 3396 ask: check the order and the split
	// on the bytes rather than only against the library.
	got := appendPacket(nil, base(generic(82, []byte{1, 1, 'x'}), generic(250, []byte{9}), generic(43, long[:300])))
	opts, err := walkOptions(got[optionsStart:])
	if err != nil {
		t.Fatal(err)
	}
	wantOrder := []uint8{43, 43, 250, 82, 255}
	if !reflect.DeepEqual(opts.codes, wantOrder) || opts.lens[0] != 255 || opts.lens[1] != 45 {
		t.Errorf("options %v lengths %v, want %v with 43 as 255+45", opts.codes, opts.lens, wantOrder)
	}
	// An address field that is not IPv4 (ToBytes panics on these) is four zeros,
	// and the fields after it stay in place.
	odd := base(func(m *dhcpv4.DHCPv4) {
		m.ClientIPAddr = net.ParseIP("2001:db8::1")
		m.YourIPAddr = nil
		m.GatewayIPAddr = net.IPv4(192, 168, 1, 1)
	})
	if b := appendPacket(nil, odd); !bytes.Equal(b[12:28], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 192, 168, 1, 1}) ||
		[4]byte(b[236:240]) != magicCookie {
		t.Errorf("address fields % x, cookie % x", b[12:28], b[236:240])
	}
	if short := appendPacket(nil, base()); len(short) != bootpMinLen || short[len(short)-1] != 0 {
		t.Errorf("a short reply is %d bytes (last %d), want %d padded with zeros", len(short), short[len(short)-1], bootpMinLen)
	}
}

// wireOptions are the option codes and lengths of a packet in wire order.
type wireOptions struct {
	codes []uint8
	lens  []int
}

// walkOptions lists the options up to and including End, skipping padding.
func walkOptions(b []byte) (wireOptions, error) {
	var w wireOptions
	for i := 0; i < len(b); {
		c := b[i]
		switch c {
		case 0:
			i++
			continue
		case 255:
			w.codes = append(w.codes, c)
			return w, nil
		}
		if i+1 >= len(b) || i+2+int(b[i+1]) > len(b) {
			return w, fmt.Errorf("option %d at offset %d runs past the end", c, i)
		}
		w.codes, w.lens = append(w.codes, c), append(w.lens, int(b[i+1]))
		i += 2 + int(b[i+1])
	}
	return w, nil
}
