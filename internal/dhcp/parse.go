package dhcp

import (
	"errors"
	"fmt"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// MaxPacketSize is the largest datagram the server reads as a DHCP message. RFC
// 2131 section 2 only guarantees 576 bytes; clients announce more with option 57,
// but nothing legitimate comes near 4 KiB, and a bound keeps a flood of giant
// datagrams cheap.
const MaxPacketSize = 4096

// minPacketSize is the fixed BOOTP header (236 bytes, RFC 2131 section 2) plus the
// magic cookie.
const minPacketSize = 236 + 4

var magicCookie = [4]byte{99, 130, 83, 99} // RFC 2131 section 3

// parseError is what ParsePacket returns: why the datagram is dropped.
type parseError struct {
	Reason DropReason
	Err    error
}

func (e *parseError) Error() string { return fmt.Sprintf("%s: %v", e.Reason, e.Err) }
func (e *parseError) Unwrap() error { return e.Err }

func dropErr(r DropReason, format string, args ...any) error {
	return &parseError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// DropReasonOf returns the reason carried by an error of ParsePacket
// (DropMalformed for any other error).
func DropReasonOf(err error) DropReason {
	var pe *parseError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return DropMalformed
}

// ParsePacket decodes a client's datagram and checks what the server relies on:
// a BOOTREQUEST from an Ethernet client (htype 1, hlen 6), at most 16 relay hops,
// the magic cookie, well-formed options ending with End, a DHCP message type and
// sane lengths for the options whose values the server reads. Anything else is
// an error carrying a DropReason; ParsePacket never panics.
// The message's option values are slices of b (see decodePacket).
func ParsePacket(b []byte) (*dhcpv4.DHCPv4, error) {
	switch {
	case len(b) > MaxPacketSize:
		return nil, dropErr(DropTooLarge, "%d bytes, more than %d", len(b), MaxPacketSize)
	case len(b) < minPacketSize:
		return nil, dropErr(DropMalformed, "%d bytes, shorter than a DHCP header", len(b))
	case dhcpv4.OpcodeType(b[0]) != dhcpv4.OpcodeBootRequest:
		return nil, dropErr(DropNotRequest, "op %d is not BOOTREQUEST", b[0])
	case b[1] != 1 || b[2] != 6:
		// Kiln boots Ethernet NICs. Other link types (InfiniBand's htype 32 puts its
		// address in option 61 with hlen 0) would need another client key.
		return nil, dropErr(DropNotEthernet, "htype %d hlen %d is not Ethernet", b[1], b[2])
	case b[3] > 16:
		// RFC 1542 section 4.1.1: relay agents discard requests with more than 16
		// hops; a server receiving one is seeing a loop.
		return nil, dropErr(DropHops, "%d relay hops", b[3])
	case [4]byte(b[236:240]) != magicCookie:
		return nil, dropErr(DropMalformed, "wrong magic cookie % x", b[236:240])
	}
	m, err := decodePacket(b)
	if err != nil {
		return nil, dropErr(DropMalformed, "%v", err)
	}
	mt, ok := m.Options[dhcpv4.OptionDHCPMessageType.Code()]
	switch {
	case !ok:
		return nil, dropErr(DropBOOTP, "no DHCP message type (BOOTP)")
	case len(mt) != 1:
		return nil, dropErr(DropMalformed, "option 53 has length %d", len(mt))
	}
	// Fixed lengths of the options whose values the server uses (RFC 2132).
	for _, c := range []struct {
		code dhcpv4.OptionCode
		n    int
	}{{dhcpv4.OptionRequestedIPAddress, 4}, {dhcpv4.OptionServerIdentifier, 4}} {
		if v, ok := m.Options[c.code.Code()]; ok && len(v) != c.n {
			return nil, dropErr(DropMalformed, "option %d has length %d, not %d", c.code.Code(), len(v), c.n)
		}
	}
	if v, ok := m.Options[dhcpv4.OptionClientIdentifier.Code()]; ok && len(v) < 2 {
		return nil, dropErr(DropMalformed, "option 61 has length %d, less than 2 (RFC 2132 9.14)", len(v))
	}
	if v, ok := m.Options[dhcpv4.OptionClientSystemArchitectureType.Code()]; ok && (len(v) < 2 || len(v)%2 != 0) {
		return nil, dropErr(DropMalformed, "option 93 has length %d, not a list of 16-bit types (RFC 4578 2.1)", len(v))
	}
	return m, nil
}
