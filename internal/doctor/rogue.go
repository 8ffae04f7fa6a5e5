package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/dhcp"
)

// Offer is a DHCPOFFER one server sent to the doctor's DISCOVER.
type Offer struct {
	Server  netip.Addr // the server identifier (option 54), else the source address
	From    netip.Addr // the datagram's source address (a relay's for a relayed offer)
	Offered netip.Addr // yiaddr
}

// DiscoverDHCPServers broadcasts one DHCPDISCOVER on iface, from its own MAC with
// the broadcast flag set (the host has no lease to be unicast to), and collects
// the OFFERs that arrive within wait. It binds UDP port 68 on iface: a DHCP
// client running there at the same time may see the offers too, and ignores them
// (their transaction ID is not its own). Needs root or CAP_NET_BIND_SERVICE and
// CAP_NET_RAW.
func DiscoverDHCPServers(ctx context.Context, iface string, wait time.Duration) ([]Offer, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("discover DHCP servers on %s: %w", iface, err)
	}
	conn, err := dhcp.ListenUDP(ctx, iface, dhcpv4.ClientPort)
	if err != nil {
		return nil, fmt.Errorf("discover DHCP servers on %s: %w", iface, err)
	}
	defer conn.Close()
	disc, err := dhcpv4.NewDiscovery(ifi.HardwareAddr, dhcpv4.WithBroadcast(true))
	if err != nil {
		return nil, fmt.Errorf("discover DHCP servers on %s: build DISCOVER: %w", iface, err)
	}
	if _, err := conn.WriteToUDP(disc.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}); err != nil {
		return nil, fmt.Errorf("discover DHCP servers on %s: send DISCOVER: %w", iface, err)
	}
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetReadDeadline(deadline)
	var offers []Offer
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
				return offers, nil
			}
			return offers, fmt.Errorf("discover DHCP servers on %s: read: %w", iface, err)
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.TransactionID != disc.TransactionID || m.MessageType() != dhcpv4.MessageTypeOffer {
			continue // not an answer to us
		}
		o := Offer{From: from.Addr().Unmap()}
		o.Offered, _ = netip.AddrFromSlice(m.YourIPAddr.To4())
		if sid := m.ServerIdentifier(); sid != nil {
			o.Server, _ = netip.AddrFromSlice(sid.To4())
		}
		if !o.Server.IsValid() {
			o.Server = o.From
		}
		offers = append(offers, o)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// CheckRogueDHCP sends a DISCOVER on iface and fails for every OFFER from a
// server not in ours (Kiln's own addresses): two DHCP servers on one segment
// hand out conflicting addresses and boot files, and machines boot whichever
// answers first.
func CheckRogueDHCP(ctx context.Context, iface string, wait time.Duration, ours []netip.Addr) Finding {
	f := Finding{Check: "other DHCP servers on " + iface}
	offers, err := DiscoverDHCPServers(ctx, iface, wait)
	if err != nil {
		f.Status, f.Detail, f.Fix = Warn, err.Error(), "run kiln doctor as root (it binds UDP port 68) on the provisioning interface"
		return f
	}
	var foreign []string
	for _, o := range offers {
		if slices.Contains(ours, o.Server) {
			continue
		}
		s := fmt.Sprintf("%s offered %s", o.Server, o.Offered)
		if o.From != o.Server {
			s += " (via " + o.From.String() + ")"
		}
		if !slices.Contains(foreign, s) {
			foreign = append(foreign, s)
		}
	}
	if len(foreign) > 0 {
		f.Status = Fail
		f.Detail = "another DHCP server answers on this segment: " + strings.Join(foreign, "; ")
		f.Fix = "stop it or exclude this segment from it (or run Kiln's subnet in proxy mode beside it: spec.mode: proxy), else machines get its addresses and boot files"
		return f
	}
	f.Detail = fmt.Sprintf("no foreign OFFER within %s (%d from Kiln)", wait, len(offers))
	return f
}
