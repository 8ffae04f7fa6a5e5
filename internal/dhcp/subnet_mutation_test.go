package dhcp

import (
	"net/netip"
	"testing"

	"github.com/kilnhq/kiln/internal/resource"
)

// TestSubnetSmallPrefixes: a /31 (RFC 3021 point-to-point) and a /32 have no
// network or broadcast address, so every address of their pools is handed out; a
// /30 keeps both out of its pool.
func TestSubnetSmallPrefixes(t *testing.T) {
	cases := []struct {
		cidr, start, end string
		in, out          []string
	}{
		{"10.9.0.0/31", "10.9.0.0", "10.9.0.1", []string{"10.9.0.0", "10.9.0.1"}, []string{"10.9.0.2"}},
		{"10.9.0.7/32", "10.9.0.7", "10.9.0.7", []string{"10.9.0.7"}, []string{"10.9.0.6", "10.9.0.8"}},
		{"10.9.0.4/30", "10.9.0.4", "10.9.0.7", []string{"10.9.0.5", "10.9.0.6"}, []string{"10.9.0.4", "10.9.0.7"}},
	}
	for _, c := range cases {
		sn := mustSubnet(t, "p2p", resource.SubnetSpec{CIDR: c.cidr, Pools: []resource.Pool{{Start: c.start, End: c.end}}})
		for _, a := range c.in {
			if !sn.InPool(netip.MustParseAddr(a)) {
				t.Errorf("%s: %s not in the pool", c.cidr, a)
			}
		}
		for _, a := range c.out {
			if sn.InPool(netip.MustParseAddr(a)) {
				t.Errorf("%s: %s in the pool", c.cidr, a)
			}
		}
		// The walk from the pool's end comes back to its first usable address.
		if got, want := sn.nextInPool(netip.MustParseAddr(c.end)), c.in[0]; got.String() != want {
			t.Errorf("%s: next after %s is %s, want %s", c.cidr, c.end, got, want)
		}
	}
}
