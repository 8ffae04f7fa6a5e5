package dhcp

import (
	"fmt"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// Subnet is one configured subnet, parsed from a resource.SubnetSpec.
type Subnet struct {
	Name   string
	Prefix netip.Prefix
	Mode   string // resource.ModeFull, ModeProxy, ModeOff
	Pools  []Pool // sorted, non-overlapping
	Router netip.Addr
	DNS    []netip.Addr
	Domain string
	// LeaseTime is the lease duration; 0: the server's default.
	LeaseTime time.Duration
	MTU       int
	// BootServer is the TFTP/HTTP server machines boot from; zero: the address of
	// the interface the request came in on.
	BootServer netip.Addr
	// Interfaces binds the subnet to local interfaces for requests that are not
	// relayed; empty: any interface with an address inside Prefix.
	Interfaces       []string
	UnknownMachines  string // resource.UnknownIgnore (also for ""), UnknownDiscovery, UnknownAllocate
	DiscoveryProfile string

	// wire holds the network options in wire form, built by NewSubnet (a Subnet
	// made otherwise builds them for each reply).
	wire []wireOpt
}

// wireOpt is one option's code and encoded value.
type wireOpt struct {
	code  uint8
	value []byte
}

// networkWire returns the subnet's network options (mask, broadcast, router,
// DNS, domain, MTU) encoded; the slices are shared and never changed.
func (s *Subnet) networkWire() []wireOpt {
	if s.wire != nil {
		return s.wire
	}
	var out []wireOpt
	add := func(o dhcpv4.Option) { out = append(out, wireOpt{o.Code.Code(), o.Value.ToBytes()}) }
	add(dhcpv4.OptSubnetMask(s.Mask()))
	add(dhcpv4.OptBroadcastAddress(s.Broadcast().AsSlice()))
	if s.Router.IsValid() {
		add(dhcpv4.OptRouter(s.Router.AsSlice()))
	}
	if len(s.DNS) > 0 {
		ips := make([]net.IP, len(s.DNS))
		for i, a := range s.DNS {
			ips[i] = a.AsSlice()
		}
		add(dhcpv4.OptDNS(ips...))
	}
	if s.Domain != "" {
		add(dhcpv4.OptDomainName(s.Domain))
	}
	if s.MTU > 0 {
		add(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{byte(s.MTU >> 8), byte(s.MTU)}))
	}
	return out
}

// Pool is an inclusive range of addresses.
type Pool struct{ Start, End netip.Addr }

// NewSubnet parses and checks a subnet's spec. The spec is validated first (a
// copy of it: defaults are filled in the copy only).
func NewSubnet(name string, spec resource.SubnetSpec) (*Subnet, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("subnet %q: %w", name, err)
	}
	pfx := netip.MustParsePrefix(spec.CIDR) // Validate checked it
	s := &Subnet{
		Name:             name,
		Prefix:           pfx,
		Mode:             spec.Mode,
		Domain:           spec.Domain,
		MTU:              spec.MTU,
		Interfaces:       slices.Clone(spec.Interfaces),
		UnknownMachines:  spec.UnknownMachines,
		DiscoveryProfile: spec.DiscoveryProfile,
	}
	if s.UnknownMachines == "" {
		s.UnknownMachines = resource.UnknownIgnore
	}
	for _, p := range spec.Pools {
		s.Pools = append(s.Pools, Pool{Start: netip.MustParseAddr(p.Start), End: netip.MustParseAddr(p.End)})
	}
	slices.SortFunc(s.Pools, func(a, b Pool) int { return a.Start.Compare(b.Start) })
	if spec.Router != "" {
		s.Router = netip.MustParseAddr(spec.Router)
	}
	for _, d := range spec.DNS {
		s.DNS = append(s.DNS, netip.MustParseAddr(d))
	}
	if spec.LeaseTime != "" {
		d, err := time.ParseDuration(spec.LeaseTime)
		if err != nil {
			return nil, fmt.Errorf("subnet %q: spec.leaseTime: %w", name, err)
		}
		s.LeaseTime = d
	}
	if spec.BootServer != "" {
		s.BootServer = netip.MustParseAddr(spec.BootServer)
	}
	s.wire = s.networkWire()
	return s, nil
}

// Contains reports whether ip is inside the subnet.
func (s *Subnet) Contains(ip netip.Addr) bool { return s.Prefix.Contains(ip) }

// InPool reports whether ip is an address the pools hand out.
func (s *Subnet) InPool(ip netip.Addr) bool {
	if !ip.Is4() || !s.usable(ip) {
		return false
	}
	for _, p := range s.Pools {
		if !ip.Less(p.Start) && !p.End.Less(ip) {
			return true
		}
	}
	return false
}

// usable excludes the network and broadcast addresses, which a pool written as
// .0-.255 would otherwise include (RFC 919/922; /31 and /32 have neither).
func (s *Subnet) usable(ip netip.Addr) bool {
	if !s.Prefix.Contains(ip) {
		return false
	}
	if s.Prefix.Bits() >= 31 {
		return true
	}
	return ip != s.Prefix.Addr() && ip != s.Broadcast()
}

// Mask returns the subnet mask (option 1).
func (s *Subnet) Mask() net.IPMask { return net.CIDRMask(s.Prefix.Bits(), 32) }

// Broadcast returns the directed broadcast address (option 28).
func (s *Subnet) Broadcast() netip.Addr {
	a := s.Prefix.Addr().As4()
	m := s.Mask()
	for i := range a {
		a[i] |= ^m[i]
	}
	return netip.AddrFrom4(a)
}

// PoolSize returns how many addresses the pools hold.
func (s *Subnet) PoolSize() int {
	n := 0
	for _, p := range s.Pools {
		n += int(addrToUint(p.End)-addrToUint(p.Start)) + 1
	}
	return n
}

// nextInPool returns the pool address after ip, wrapping around to the first
// pool; from an address outside the pools it returns the next pool address above
// it (or the first). It returns the zero Addr when there are no pools.
func (s *Subnet) nextInPool(ip netip.Addr) netip.Addr {
	if len(s.Pools) == 0 {
		return netip.Addr{}
	}
	for range 3 { // at most: skip the network address, the broadcast address, wrap
		n := addrToUint(ip) + 1
		next := netip.Addr{}
		for _, p := range s.Pools {
			if n <= addrToUint(p.End) {
				next = uintToAddr(max(n, addrToUint(p.Start)))
				break
			}
		}
		if !next.IsValid() || n == 0 { // past the last pool, or 255.255.255.255 wrapped
			next = s.Pools[0].Start
		}
		if s.usable(next) {
			return next
		}
		ip = next
	}
	return s.Pools[0].Start
}

func addrToUint(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func uintToAddr(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}
