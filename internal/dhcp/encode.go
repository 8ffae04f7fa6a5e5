package dhcp

import (
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// bootpMinLen is RFC 951's message size: shorter replies are padded to it (some
// relays and clients drop anything shorter).
const bootpMinLen = 300

// appendPacket appends m's wire form to b and returns it: the bytes
// dhcpv4.(*DHCPv4).ToBytes makes (options in code order, the relay agent
// information last, RFC 3396 splitting of long ones, padding to 300 bytes), but
// into a buffer the caller reuses, without ToBytes' growing buffers and sorted
// key slices. A server sends two of these per client exchange.
func appendPacket(b []byte, m *dhcpv4.DHCPv4) []byte {
	start := len(b)
	b = append(b, byte(m.OpCode), byte(m.HWType), byte(len(m.ClientHWAddr)), m.HopCount)
	b = append(b, m.TransactionID[:]...)
	b = append(b, byte(m.NumSeconds>>8), byte(m.NumSeconds), byte(m.Flags>>8), byte(m.Flags))
	b = appendIP4(b, m.ClientIPAddr)
	b = appendIP4(b, m.YourIPAddr)
	b = appendIP4(b, m.ServerIPAddr)
	b = appendIP4(b, m.GatewayIPAddr)
	b = appendField(b, m.ClientHWAddr, 16, 16)
	b = appendField(b, []byte(m.ServerHostName), 63, 64)
	b = appendField(b, []byte(m.BootFileName), 127, 128)
	b = append(b, magicCookie[:]...)

	// The codes in order: a small insertion sort on the stack (a reply has a
	// dozen options); 82 goes last (RFC 3046 2.1), End and Pad are not options.
	var codes [256]uint8
	n := 0
	agentInfo := false
	for c := range m.Options {
		switch c {
		case dhcpv4.OptionRelayAgentInformation.Code():
			agentInfo = true
			continue
		case dhcpv4.OptionEnd.Code(), dhcpv4.OptionPad.Code():
			continue
		}
		i := n
		for i > 0 && codes[i-1] > c {
			codes[i] = codes[i-1]
			i--
		}
		codes[i] = c
		n++
	}
	if agentInfo {
		codes[n] = dhcpv4.OptionRelayAgentInformation.Code()
		n++
	}
	for _, c := range codes[:n] {
		data := m.Options[c]
		if len(data) == 0 {
			b = append(b, c, 0)
			continue
		}
		for len(data) > 0 {
			k := min(len(data), 255)
			b = append(b, c, byte(k))
			b = append(b, data[:k]...)
			data = data[k:]
		}
	}
	b = append(b, dhcpv4.OptionEnd.Code())
	for len(b)-start < bootpMinLen {
		b = append(b, dhcpv4.OptionPad.Code())
	}
	return b
}

// appendIP4 appends an address field: the IPv4 address, or zeros.
func appendIP4(b []byte, ip net.IP) []byte {
	if v4 := ip.To4(); v4 != nil {
		return append(b, v4...)
	}
	return append(b, 0, 0, 0, 0)
}

// appendField appends a fixed-size field: at most max bytes of v, zero-filled to size.
func appendField(b, v []byte, max, size int) []byte {
	if len(v) > max {
		v = v[:max]
	}
	b = append(b, v...)
	for range size - len(v) {
		b = append(b, 0)
	}
	return b
}
