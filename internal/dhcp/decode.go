package dhcp

import (
	"errors"
	"io"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// decodePacket is dhcpv4.FromBytes for a datagram of at least minPacketSize
// bytes whose magic cookie ParsePacket has checked: the same message (the fuzz
// target compares the two), with fewer allocations. The four address fields
// share one allocation, and option values are slices of b (capped, so that an
// append copies) except where an option appears more than once and its
// instances are concatenated (RFC 3396). b must not change afterwards.
func decodePacket(b []byte) (*dhcpv4.DHCPv4, error) {
	if len(b) < minPacketSize {
		return nil, io.ErrUnexpectedEOF
	}
	p := &dhcpv4.DHCPv4{
		OpCode:     dhcpv4.OpcodeType(b[0]),
		HWType:     iana.HWType(b[1]),
		HopCount:   b[3],
		NumSeconds: uint16(b[8])<<8 | uint16(b[9]),
		Flags:      uint16(b[10])<<8 | uint16(b[11]),
	}
	copy(p.TransactionID[:], b[4:8])
	addrs := make([]byte, 16+16)
	copy(addrs, b[12:28])
	p.ClientIPAddr = net.IP(addrs[0:4:4])
	p.YourIPAddr = net.IP(addrs[4:8:8])
	p.ServerIPAddr = net.IP(addrs[8:12:12])
	p.GatewayIPAddr = net.IP(addrs[12:16:16])
	hlen := min(int(b[2]), 16)
	copy(addrs[16:], b[28:44])
	p.ClientHWAddr = net.HardwareAddr(addrs[16 : 16+hlen : 32])
	p.ServerHostName = cString(b[44:108])
	p.BootFileName = cString(b[108:236])
	if [4]byte(b[236:240]) != magicCookie {
		return nil, errBadCookie
	}
	opts := make(dhcpv4.Options, 8) // one map group: most requests carry fewer options
	data := b[240:]
	end := len(data) == 0 // as FromBytes: no options at all is no error
	for len(data) > 0 {
		code := data[0]
		data = data[1:]
		if code == dhcpv4.OptionPad.Code() {
			continue
		}
		if code == dhcpv4.OptionEnd.Code() {
			end = true
			break
		}
		if len(data) < 1 {
			return nil, io.ErrUnexpectedEOF
		}
		n := int(data[0])
		data = data[1:]
		if len(data) < n {
			return nil, io.ErrUnexpectedEOF
		}
		v := data[:n:n]
		data = data[n:]
		if old, ok := opts[code]; ok {
			opts[code] = append(old, v...)
		} else if n == 0 {
			opts[code] = nil // as FromBytes' append(nil, empty...) leaves it
		} else {
			opts[code] = v
		}
	}
	if !end {
		return nil, io.ErrUnexpectedEOF
	}
	p.Options = opts
	return p, nil
}

var errBadCookie = errors.New("malformed DHCP packet: wrong magic cookie")

// cString is a NUL-terminated field's text (all of it without a NUL).
func cString(f []byte) string {
	for i, c := range f {
		if c == 0 {
			return string(f[:i])
		}
	}
	return string(f)
}
