package dhcpstore

import (
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
)

// TestOfferHoldsTheOnlyAddress: an offer holds its address for the client: in a
// pool of one address, a second client gets no offer, and a REQUEST selecting
// this server for that address from another client is NAKed, whether the address
// was never used (no record under the hold) or has a released record under it;
// the client it was offered to gets it. Once a hold ends the address is free.
func TestOfferHoldsTheOnlyAddress(t *testing.T) {
	sn := mustSubnet(t, "lab", resource.SubnetSpec{CIDR: "10.0.0.0/24", Pools: []resource.Pool{{Start: "10.0.0.100", End: "10.0.0.100"}},
		UnknownMachines: resource.UnknownAllocate})
	h := storeHarness(t, testkit.OpenSQLite(t, t.TempDir()), sn)
	const ip = "10.0.0.100"
	offer := func(hw string) string {
		t.Helper()
		r := h.send(dhcptest.Msg(t, hw, dhcpv4.MessageTypeDiscover))
		if r == nil {
			return ""
		}
		return r.Msg.YourIPAddr.String()
	}
	selecting := func(hw string) dhcpv4.MessageType {
		t.Helper()
		r := h.send(dhcptest.Msg(t, hw, dhcpv4.MessageTypeRequest, dhcptest.WithRequested(ip), dhcptest.WithServerID(dhcptest.ServerIP)))
		if r == nil {
			return dhcpv4.MessageTypeNone
		}
		return r.Msg.MessageType()
	}
	for _, round := range []string{"never used", "released"} {
		if got := offer(macA); got != ip {
			t.Fatalf("%s: offer %q, want %s", round, got, ip)
		}
		if got := offer(macB); got != "" {
			t.Fatalf("%s: an address held for %s was offered to %s too", round, macA, macB)
		}
		if mt := selecting(macB); mt != dhcpv4.MessageTypeNak {
			t.Fatalf("%s: %s selecting the address held for %s: %s, want NAK", round, macB, macA, mt)
		}
		if mt := selecting(macA); mt != dhcpv4.MessageTypeAck {
			t.Fatalf("%s: %s selecting its offer: %s, want ACK", round, macA, mt)
		}
		if r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRelease, dhcptest.WithCiaddr(ip), dhcptest.WithServerID(dhcptest.ServerIP))); r != nil {
			t.Fatalf("a RELEASE was answered: %v", r)
		}
	}
	// A hold ends: another client is offered the address.
	if got := offer(macA); got != ip {
		t.Fatalf("offer %q", got)
	}
	h.clock.Advance(dhcp.DefaultOfferHold + time.Second)
	if got := offer(macB); got != ip {
		t.Fatalf("after the hold ended %s was offered %q", macB, got)
	}
}
