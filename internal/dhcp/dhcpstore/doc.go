// Package dhcpstore keeps the DHCP server's state in Kiln's store: it implements
// the small interfaces that package dhcp declares in seams.go, the way smee keeps
// its backends apart from its DHCP handlers.
//
//   - [Leases] implements dhcp.Leases: one Lease object per address, offers held in
//     memory until the REQUEST, writes group-committed; it runs dhcp's
//     [dhcp.Allocator] on a dhcp.LeaseTable over a store transaction.
//   - [Machines] implements dhcp.Machines and dhcp.Reservations: a machine found
//     by MAC through the store's unique-key index, with a cache and an in-memory
//     set of the MACs machines claim.
//   - [Subnets] implements dhcp.Subnets from the store's Subnet objects.
//
// Package dhcp itself imports no store: its protocol code, allocator and
// MemoryLeases test without one.
package dhcpstore
