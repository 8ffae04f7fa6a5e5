package tftp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// enableDstAddr asks the kernel to report each datagram's destination address
// (IP_PKTINFO, IPV6_RECVPKTINFO) on a wildcard-bound socket. A dual-stack IPv6
// socket takes both options; a v4 socket refuses the v6 one and vice versa.
func enableDstAddr(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1) == nil {
			ok = true
		}
		if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO, 1) == nil {
			ok = true
		}
	})
	return ok
}

// parseDstAddr extracts the local address to reply from out of the control
// messages of one datagram; the zero Addr if there is none.
func parseDstAddr(oob []byte) netip.Addr {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO && len(m.Data) >= syscall.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }.
			// spec_dst is the local address the kernel would answer from: the
			// destination for unicast, the interface address for a broadcast.
			a := netip.AddrFrom4([4]byte(m.Data[4:8]))
			if a.IsUnspecified() {
				a = netip.AddrFrom4([4]byte(m.Data[8:12]))
			}
			return a
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO && len(m.Data) >= syscall.SizeofInet6Pktinfo:
			// struct in6_pktinfo { in6_addr addr; unsigned ifindex; }
			a := netip.AddrFrom16([16]byte(m.Data[:16])).Unmap()
			if a.Is6() && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) {
				a = a.WithZone(strconv.FormatUint(uint64(binary.NativeEndian.Uint32(m.Data[16:20])), 10))
			}
			return a
		}
	}
	return netip.Addr{}
}
