// Package dhcp is Kiln's DHCPv4 server: the step before TFTP and iPXE, where a
// machine learns its address and what to boot.
//
// The protocol code knows nothing about Kiln's inventory. It asks four small
// seams, pixiecore-style:
//
//   - [Subnets]: the configured subnets (parsed from resource.SubnetSpec by [NewSubnet]);
//   - [Machines]: which machine a MAC belongs to, its reserved address and hostname;
//   - [Leases]: offer, commit, release and decline addresses;
//   - [Booter]: what a client of a given class (BIOS PXE, UEFI PXE, UEFI HTTP boot,
//     iPXE) should load next.
//
// Package dhcp/dhcpstore implements the first three on Kiln's store (this package
// imports no store); [MemoryLeases] is an in-memory Leases for tests and tools;
// [DefaultBooter] is the standard chain (firmware → iPXE over TFTP or HTTP → the
// boot script over HTTP).
//
// A subnet runs in one of three modes:
//
//   - full: Kiln is the DHCP server (RFC 2131). Addresses come from the subnet's
//     pools or from a machine's reservation; a lease is written to the store before
//     the DHCPACK leaves.
//   - proxy: another server hands out addresses; Kiln only answers PXE and HTTP
//     boot clients with boot information and never an address (the proxyDHCP of
//     the PXE 2.1 specification), on port 67 and on the PXE boot server port 4011.
//   - off: Kiln stays silent.
//
// [Server.HandlePacket] is the whole protocol for one datagram and is what the
// tests, the fuzz targets and the benchmarks drive; [Server.Serve] and
// [Server.ListenAndServe] add the sockets.
package dhcp
