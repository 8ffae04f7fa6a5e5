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

// TestOfferHoldsTheOnlyAddress: in a pool of one address, an offer holds it: a
// second client gets no offer while the hold lasts, whether the address was never
// used (no record under the hold) or has a released record under it; once the
// hold ends, the address is offered again.
func TestOfferHoldsTheOnlyAddress(t *testing.T) {
	sn := mustSubnet(t, "lab", resource.SubnetSpec{CIDR: "10.0.0.0/24", Pools: []resource.Pool{{Start: "10.0.0.100", End: "10.0.0.100"}},
		UnknownMachines: resource.UnknownAllocate})
	h := storeHarness(t, testkit.OpenSQLite(t, t.TempDir()), sn)
	offer := func(hw string) string {
		t.Helper()
		r := h.send(dhcptest.Msg(t, hw, dhcpv4.MessageTypeDiscover))
		if r == nil {
			return ""
		}
		return r.Msg.YourIPAddr.String()
	}
	if got := offer(macA); got != "10.0.0.100" {
		t.Fatalf("first offer %q", got)
	}
	if got := offer(macB); got != "" {
		t.Fatalf("a never-used address held for %s was offered to %s too", macA, macB)
	}
	h.clock.Advance(dhcp.DefaultOfferHold + time.Second)
	if ip := h.dora(macB).YourIPAddr.String(); ip != "10.0.0.100" {
		t.Fatalf("after the hold ended %s got %q", macB, ip)
	}
	if r := h.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeRelease, dhcptest.WithCiaddr("10.0.0.100"), dhcptest.WithServerID(dhcptest.ServerIP))); r != nil {
		t.Fatalf("a RELEASE was answered: %v", r)
	}
	if got := offer(macA); got != "10.0.0.100" {
		t.Fatalf("the released address offered %q", got)
	}
	if got := offer("52:54:00:00:00:0c"); got != "" {
		t.Fatalf("a released address held for %s was offered to another client too", macA)
	}
}
