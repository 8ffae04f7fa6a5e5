//go:build !linux

package dhcp

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// Kiln's DHCP server runs on Linux. Elsewhere the package builds (the protocol
// core and its tests are portable) but sockets get no interface binding, no
// broadcast permission and no per-datagram interface information.

func socketControl(iface string) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error {
		if iface != "" {
			return errors.New("binding to an interface is only supported on Linux")
		}
		return nil
	}
}

func enablePktInfo(*net.UDPConn) error { return nil }

func parsePktInfo([]byte) int { return 0 }

func pktInfo(int, netip.Addr) []byte { return nil }

func setReadBuffer(conn *net.UDPConn, n int) { _ = conn.SetReadBuffer(n) }
