package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// socketControl sets the options of a DHCP socket before bind: SO_REUSEADDR (one
// socket per interface on the same port), SO_BROADCAST (replies to clients that
// have no address yet go to 255.255.255.255), IP_PKTINFO (the receiving
// interface of each datagram) and SO_BINDTODEVICE when iface is set.
func socketControl(iface string) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1); serr != nil {
				return
			}
			if iface != "" {
				serr = unix.BindToDevice(int(fd), iface)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// enablePktInfo asks the kernel for each datagram's receiving interface.
func enablePktInfo(conn *net.UDPConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}); err != nil {
		return err
	}
	return serr
}

// parsePktInfo returns the interface index of IP_PKTINFO, 0 if absent.
func parsePktInfo(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo {
			// struct in_pktinfo { int ipi_ifindex; ... }, host byte order.
			return int(int32(binary.NativeEndian.Uint32(m.Data[:4])))
		}
	}
	return 0
}

// pktInfo builds the control message that sends a datagram out of interface
// ifindex (from: its source address, if valid). nil when there is nothing to say.
func pktInfo(ifindex int, from netip.Addr) []byte {
	if ifindex <= 0 && !from.Is4() {
		return nil
	}
	info := &unix.Inet4Pktinfo{Ifindex: int32(ifindex)}
	if from.Is4() {
		info.Spec_dst = from.As4()
	}
	return unix.PktInfo4(info)
}

// setReadBuffer asks for an n-byte receive buffer: SO_RCVBUFFORCE (root, beyond
// net.core.rmem_max), else SO_RCVBUF (capped by rmem_max). Best effort.
func setReadBuffer(conn *net.UDPConn, n int) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	})
}
