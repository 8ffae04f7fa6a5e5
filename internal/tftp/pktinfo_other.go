//go:build !linux

package tftp

import (
	"net"
	"net/netip"
)

// Without IP_PKTINFO support, transfers on a wildcard listener reply from the
// wildcard address and the kernel picks the source address.
func enableDstAddr(*net.UDPConn) bool { return false }

func parseDstAddr([]byte) netip.Addr { return netip.Addr{} }
