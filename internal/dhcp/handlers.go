package dhcp

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/resource"
)

var broadcastAddr = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// ---- full mode (RFC 2131) ---------------------------------------------------------

func (s *Server) full(ctx context.Context, r *request) (*Reply, DropReason) {
	if s.Leases == nil {
		s.log().Error("dhcp: subnet in full mode but the server has no lease store", "subnet", r.sn.Name)
		return nil, DropBackendError
	}
	switch r.m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		return s.discover(ctx, r)
	case dhcpv4.MessageTypeRequest:
		return s.request(ctx, r)
	case dhcpv4.MessageTypeDecline:
		return s.decline(ctx, r)
	case dhcpv4.MessageTypeRelease:
		return s.release(ctx, r)
	default: // INFORM
		return s.inform(ctx, r)
	}
}

func (s *Server) leaseTime(sn *Subnet) time.Duration {
	return cmp.Or(sn.LeaseTime, cmp.Or(s.LeaseTime, DefaultLeaseTime))
}

// reserved is the client's reservation inside the request's subnet.
func (s *Server) reserved(r *request) netip.Addr {
	if r.mach != nil && r.mach.IP.Is4() && r.sn.Contains(r.mach.IP) {
		return r.mach.IP
	}
	return netip.Addr{}
}

// skip returns the test for addresses reserved for another machine.
func (s *Server) skip(ctx context.Context, r *request) func(netip.Addr) bool {
	res, ok := s.Machines.(Reservations)
	if !ok {
		return nil
	}
	return func(ip netip.Addr) bool {
		owner, err := res.ReservedBy(ctx, ip)
		if err != nil {
			s.log().Warn("dhcp: check address reservation", "ip", ip.String(), "err", err)
			return false
		}
		return owner != "" && owner != r.machineName()
	}
}

// leaseHostname is what the lease records as host name: the machine's, else the
// one the client sent (option 12) if it is a valid host name.
func (r *request) leaseHostname() string {
	if h := r.replyHostname(); h != "" {
		return h
	}
	if h := string(r.m.Options.Get(dhcpv4.OptionHostName)); resource.ValidHostname(h) {
		return h
	}
	return ""
}

// replyHostname is option 12 of a reply: the machine's host name, else its name.
func (r *request) replyHostname() string {
	if r.mach == nil {
		return ""
	}
	if r.mach.Hostname != "" {
		return r.mach.Hostname
	}
	if resource.ValidHostname(r.mach.Name) {
		return r.mach.Name
	}
	return ""
}

func (s *Server) discover(ctx context.Context, r *request) (*Reply, DropReason) {
	reserved := s.reserved(r)
	l, err := s.Leases.Offer(ctx, OfferRequest{
		Subnet: r.sn, Client: r.client, Hostname: r.leaseHostname(),
		Reserved: reserved, Requested: optAddr(r.m, dhcpv4.OptionRequestedIPAddress),
		Now: r.now, Until: r.now.Add(cmp.Or(s.OfferHold, DefaultOfferHold)),
		Discovery: r.discovery(), Skip: s.skip(ctx, r),
	})
	switch {
	case errors.Is(err, ErrNoAddress):
		s.log().Warn("dhcp: no address to offer", "mac", r.mac.String(), "machine", r.machineName(), "subnet", r.sn.Name, "err", err)
		return nil, DropPoolExhausted
	case err != nil:
		s.log().Error("dhcp: offer an address", "mac", r.mac.String(), "machine", r.machineName(), "subnet", r.sn.Name, "err", err)
		return nil, DropBackendError
	}
	if reserved.IsValid() && l.IP != reserved {
		s.log().Warn("dhcp: reserved address is leased to another client; offering a pool address meanwhile",
			"mac", r.mac.String(), "machine", r.machineName(), "reserved", reserved.String(), "ip", l.IP.String())
	}
	rep := newReply(r.m, dhcpv4.MessageTypeOffer, r.server)
	rep.YourIPAddr = l.IP.AsSlice()
	s.networkOptions(rep, r, s.leaseTime(r.sn), true)
	file := s.addBoot(ctx, rep, r, true)
	if s.logs(ctx, slog.LevelInfo) {
		s.log().Info("dhcp: offer", "mac", r.mac.String(), "machine", r.machineName(), "ip", l.IP.String(), "subnet", r.sn.Name, "boot", file)
	}
	if s.wantEvent(r) {
		s.event(ctx, Event{MAC: r.mac, Machine: r.machineName(), IP: l.IP, Type: EventOffer, Message: fmt.Sprintf("offered %s on subnet %s%s", l.IP, r.sn.Name, bootNote(file))})
	}
	return s.reply(r, rep), noDrop
}

func bootNote(file string) string {
	if file == "" {
		return ""
	}
	return ", boot " + file
}

// isOurs reports whether a server identifier names this server.
func (s *Server) isOurs(sid netip.Addr, r *request) bool {
	if sid == r.server || sid == s.ServerIP {
		return true
	}
	for _, p := range r.in.IfaceAddrs {
		if p.Addr() == sid {
			return true
		}
	}
	return false
}

func (s *Server) request(ctx context.Context, r *request) (*Reply, DropReason) {
	sid := optAddr(r.m, dhcpv4.OptionServerIdentifier)
	reqIP := optAddr(r.m, dhcpv4.OptionRequestedIPAddress)
	ciaddr := addrOf(r.m.ClientIPAddr)
	var ip netip.Addr
	var state string
	existing := false
	// RFC 2131 section 4.3.2 tells the client's state from the fields it sets.
	switch {
	case sid.IsValid():
		state = "selecting"
		if !s.isOurs(sid, r) {
			// The client took another server's offer: ours is void (4.3.2, SELECTING).
			if l, err := s.Leases.Lookup(ctx, r.sn.Name, r.client); err == nil && l.State == resource.LeaseOffered {
				_ = s.Leases.Release(ctx, ReleaseRequest{Subnet: r.sn, Client: r.client, IP: l.IP, Now: r.now, OnlyOffered: true})
			}
			return nil, DropNotForUs
		}
		ip = reqIP
		if !ip.IsValid() {
			ip = ciaddr // not RFC-conformant, but unambiguous
		}
	case reqIP.IsValid():
		state, ip, existing = "init-reboot", reqIP, true
	case ciaddr.IsValid():
		state, ip = "renewing", ciaddr
	}
	if !ip.IsValid() {
		return nil, DropMalformed
	}
	if !r.sn.Contains(ip) {
		return s.nak(ctx, r, ip, fmt.Sprintf("%s is not on subnet %s", ip, r.sn.Prefix))
	}
	reserved := s.reserved(r)
	if ip != reserved {
		if !r.sn.InPool(ip) {
			return s.nak(ctx, r, ip, fmt.Sprintf("%s is not in a pool of subnet %s", ip, r.sn.Name))
		}
		if skip := s.skip(ctx, r); skip != nil && skip(ip) {
			return s.nak(ctx, r, ip, fmt.Sprintf("%s is reserved for another machine", ip))
		}
		if reserved.IsValid() && state != "selecting" {
			// The machine got a reservation since it was given this address: send it
			// back to DISCOVER, which offers the reservation.
			return s.nak(ctx, r, ip, fmt.Sprintf("this machine's address is %s", reserved))
		}
	} else {
		existing = false // a reservation is the client's even without a record
	}
	lt := s.leaseTime(r.sn)
	l, err := s.Leases.Commit(ctx, CommitRequest{
		Subnet: r.sn, Client: r.client, IP: ip, Hostname: r.leaseHostname(),
		Now: r.now, Until: r.now.Add(lt), Existing: existing, Discovery: r.discovery(),
	})
	switch {
	case errors.Is(err, ErrNoLease):
		// INIT-REBOOT from a client we have no record of: "the server MUST remain
		// silent" (4.3.2) — the client may belong to another server.
		return nil, DropNoRecord
	case errors.Is(err, ErrAddressTaken):
		// Also the answer to a SELECTING client whose offer another replica bound
		// first (offers are not stored, so two servers on one database may offer one
		// address): on the NAK it restarts with a DISCOVER (RFC 2131 4.3.2).
		return s.nak(ctx, r, ip, fmt.Sprintf("%s is leased to another client", ip))
	case err != nil:
		// No answer: the client retransmits, and no ACK may leave before the lease
		// is stored.
		s.log().Error("dhcp: commit lease", "mac", r.mac.String(), "machine", r.machineName(), "ip", ip.String(), "err", err)
		return nil, DropBackendError
	}
	rep := newReply(r.m, dhcpv4.MessageTypeAck, r.server)
	rep.ClientIPAddr = r.m.ClientIPAddr
	rep.YourIPAddr = l.IP.AsSlice()
	s.networkOptions(rep, r, lt, true)
	file := s.addBoot(ctx, rep, r, true)
	if s.logs(ctx, slog.LevelInfo) {
		s.log().Info("dhcp: ack", "mac", r.mac.String(), "machine", r.machineName(), "ip", l.IP.String(), "subnet", r.sn.Name, "state", state, "boot", file)
	}
	if s.wantEvent(r) {
		s.event(ctx, Event{MAC: r.mac, Machine: r.machineName(), IP: l.IP, Type: EventAck,
			Message: fmt.Sprintf("leased %s on subnet %s for %s (%s)%s", l.IP, r.sn.Name, lt, state, bootNote(file))})
	}
	return s.reply(r, rep), noDrop
}

func (s *Server) nak(ctx context.Context, r *request, ip netip.Addr, why string) (*Reply, DropReason) {
	rep := newReply(r.m, dhcpv4.MessageTypeNak, r.server)
	rep.UpdateOption(dhcpv4.OptMessage(why))
	if addrOf(r.m.GatewayIPAddr).IsValid() {
		// 4.3.2: through a relay, the NAK carries the broadcast bit so that the
		// agent broadcasts it to a client that may not have a valid address.
		rep.SetBroadcast()
	}
	if s.logs(ctx, slog.LevelInfo) {
		s.log().Info("dhcp: nak", "mac", r.mac.String(), "machine", r.machineName(), "ip", ip.String(), "subnet", r.sn.Name, "reason", why)
	}
	s.event(ctx, Event{MAC: r.mac, Machine: r.machineName(), IP: ip, Type: EventNak, Message: "refused " + ip.String() + ": " + why})
	return s.reply(r, rep), noDrop
}

func (s *Server) decline(ctx context.Context, r *request) (*Reply, DropReason) {
	if sid := optAddr(r.m, dhcpv4.OptionServerIdentifier); sid.IsValid() && !s.isOurs(sid, r) {
		return nil, DropNotForUs
	}
	ip := optAddr(r.m, dhcpv4.OptionRequestedIPAddress) // 4.4.4: MUST carry the address
	if !ip.IsValid() {
		return nil, DropMalformed
	}
	if !r.sn.Contains(ip) {
		return nil, DropNoRecord
	}
	q := cmp.Or(s.DeclineQuarantine, DefaultDeclineQuarantine)
	until := r.now.Add(q)
	maxSubnet := cmp.Or(s.MaxDeclinedPerSubnet, max(1, r.sn.PoolSize()/8))
	maxMAC := cmp.Or(s.MaxDeclinesPerClient, DefaultDeclinesPerClient)
	var err error
	admitted, _ := s.declines.admit(r.sn.Name, r.mac.String(), r.now, until, maxSubnet, maxMAC, func() error {
		err = s.Leases.Decline(ctx, DeclineRequest{Subnet: r.sn, Client: r.client, IP: ip, Now: r.now, Until: until})
		return err
	})
	switch {
	case !admitted:
		s.log().Warn("dhcp: decline refused: quarantine limit reached", "mac", r.mac.String(), "machine", r.machineName(), "ip", ip.String(), "subnet", r.sn.Name)
		return nil, DropDeclineLimited
	case errors.Is(err, ErrNoLease):
		return nil, DropNoRecord
	case err != nil:
		s.log().Error("dhcp: quarantine declined address", "mac", r.mac.String(), "ip", ip.String(), "err", err)
		return nil, DropBackendError
	}
	s.Metrics.Quarantined.Add(1)
	s.log().Warn("dhcp: address declined, in quarantine", "mac", r.mac.String(), "machine", r.machineName(), "ip", ip.String(), "subnet", r.sn.Name, "until", until)
	s.event(ctx, Event{MAC: r.mac, Machine: r.machineName(), IP: ip, Type: EventDecline,
		Message: fmt.Sprintf("declined %s (in use by another host?); not handed out for %s", ip, q)})
	return nil, noDrop
}

func (s *Server) release(ctx context.Context, r *request) (*Reply, DropReason) {
	if sid := optAddr(r.m, dhcpv4.OptionServerIdentifier); sid.IsValid() && !s.isOurs(sid, r) {
		return nil, DropNotForUs
	}
	ip := addrOf(r.m.ClientIPAddr) // 4.4.6: ciaddr is the address released
	if !ip.IsValid() {
		return nil, DropMalformed
	}
	err := s.Leases.Release(ctx, ReleaseRequest{Subnet: r.sn, Client: r.client, IP: ip, Now: r.now})
	switch {
	case errors.Is(err, ErrNoLease):
		return nil, DropNoRecord
	case err != nil:
		s.log().Error("dhcp: release lease", "mac", r.mac.String(), "ip", ip.String(), "err", err)
		return nil, DropBackendError
	}
	if s.logs(ctx, slog.LevelInfo) {
		s.log().Info("dhcp: release", "mac", r.mac.String(), "machine", r.machineName(), "ip", ip.String(), "subnet", r.sn.Name)
	}
	s.event(ctx, Event{MAC: r.mac, Machine: r.machineName(), IP: ip, Type: EventRelease, Message: "released " + ip.String()})
	return nil, noDrop
}

// inform answers DHCPINFORM (4.3.5): configuration only, no address and no lease
// times.
func (s *Server) inform(ctx context.Context, r *request) (*Reply, DropReason) {
	if !addrOf(r.m.ClientIPAddr).IsValid() {
		return nil, DropMalformed
	}
	rep := newReply(r.m, dhcpv4.MessageTypeAck, r.server)
	rep.ClientIPAddr = r.m.ClientIPAddr
	s.networkOptions(rep, r, 0, false)
	s.addBoot(ctx, rep, r, true)
	return s.reply(r, rep), noDrop
}

// ---- proxy mode (PXE 2.1, RFC 4578) -------------------------------------------------

// pxeDiscoveryControl is PXE vendor option 43 with sub-option 6
// (PXE_DISCOVERY_CONTROL) = 8: "use the boot file name in the offer, skip boot
// server discovery" (PXE 2.1 table 2-1). BIOS PXE ROMs need it to take the file
// from a proxy offer; see bootServer for UEFI.
var pxeDiscoveryControl = []byte{6, 1, 8, 255}

func (s *Server) proxy(ctx context.Context, r *request) (*Reply, DropReason) {
	if r.m.MessageType() != dhcpv4.MessageTypeDiscover {
		// REQUESTs on port 67 are for the DHCP server that owns the addresses; PXE
		// clients ask us on PXEPort after that.
		return nil, DropNotForUs
	}
	if !r.class.PXE && !r.class.HTTP {
		return nil, DropNotNetboot
	}
	rep := newReply(r.m, dhcpv4.MessageTypeOffer, r.server)
	// A proxy offer never carries an address: yiaddr stays 0 (PXE 2.1 section 2.2.3).
	file := s.addBoot(ctx, rep, r, false)
	if file == "" {
		return nil, DropNotNetboot
	}
	s.pxeOptions(rep, r)
	if s.logs(ctx, slog.LevelInfo) {
		s.log().Info("dhcp: proxy offer", "mac", r.mac.String(), "machine", r.machineName(), "subnet", r.sn.Name, "boot", file)
	}
	s.event(ctx, Event{MAC: r.mac, Machine: r.machineName(), Type: EventOffer, Message: "proxyDHCP offer, boot " + file})
	return s.reply(r, rep), noDrop
}

// pxeOptions adds what a proxyDHCP or boot server reply carries for PXE clients.
func (s *Server) pxeOptions(rep *dhcpv4.DHCPv4, r *request) {
	// The reply must carry vendor class "PXEClient" (PXE 2.1 section 2.2.3): EDK2
	// classifies an offer without it as a plain DHCP offer and ignores it when it
	// has no address. HTTP boot clients need "HTTPClient" instead (set by addBoot).
	if !rep.Options.Has(dhcpv4.OptionClassIdentifier) {
		rep.UpdateOption(dhcpv4.OptClassIdentifier(vendorPXE))
	}
	// PXE 2.1: a server must echo the client's machine identifier (option 97).
	if len(r.class.UUID) > 0 {
		rep.Options[dhcpv4.OptionClientMachineIdentifier.Code()] = r.class.UUID
	}
	// Option 43 sub-option 6 for BIOS PXE ROMs and iPXE, like pixiecore. UEFI
	// firmware (EDK2's PxeBcDhcp4.c) treats a proxy offer as a "BINL" offer either
	// way and asks the boot server on port 4011, which bootServer answers.
	if r.class.IPXE || !r.class.HTTP && (!r.class.HasArch || r.class.Arch == ArchBIOS) {
		rep.Options[dhcpv4.OptionVendorSpecificInformation.Code()] = pxeDiscoveryControl
	}
}

// pxeBootItem returns sub-option 71 (PXE_BOOT_ITEM) of the request's option 43,
// nil if absent or malformed.
func pxeBootItem(m *dhcpv4.DHCPv4) []byte {
	v := m.Options.Get(dhcpv4.OptionVendorSpecificInformation)
	for len(v) > 0 {
		code := v[0]
		if code == 255 {
			return nil
		}
		if code == 0 {
			v = v[1:]
			continue
		}
		if len(v) < 2 || 2+int(v[1]) > len(v) {
			return nil
		}
		if code == 71 {
			return v[2 : 2+int(v[1])]
		}
		v = v[2+int(v[1]):]
	}
	return nil
}

// bootServer answers a request to the PXE boot server port: UEFI firmware sends
// one after a proxy offer (EDK2 PxeBcRetryBinlOffer), iPXE too (its "ProxyDHCP
// REQUEST"). The ACK carries the boot file; the client already has its address.
func (s *Server) bootServer(ctx context.Context, r *request) (*Reply, DropReason) {
	if !r.class.PXE && !r.class.HTTP {
		return nil, DropNotNetboot
	}
	rep := newReply(r.m, dhcpv4.MessageTypeAck, r.server)
	rep.ClientIPAddr = r.m.ClientIPAddr
	file := s.addBoot(ctx, rep, r, false)
	if file == "" {
		return nil, DropNotNetboot
	}
	s.pxeOptions(rep, r)
	if item := pxeBootItem(r.m); len(item) == 4 {
		// PXE 2.1 section 2.2.5: the boot server's ACK names the boot item (type and
		// layer) it answers.
		rep.Options[dhcpv4.OptionVendorSpecificInformation.Code()] = append([]byte{71, 4}, append(item, 255)...)
	}
	if s.logs(ctx, slog.LevelInfo) {
		s.log().Info("dhcp: boot server ack", "mac", r.mac.String(), "machine", r.machineName(), "ip", r.in.Src.Addr().String(), "boot", file)
	}
	s.event(ctx, Event{MAC: r.mac, Machine: r.machineName(), IP: addrOf(r.m.ClientIPAddr), Type: EventAck, Message: "PXE boot server, boot " + file})
	return s.reply(r, rep), noDrop
}

// ---- replies ------------------------------------------------------------------------

// messageTypeBytes holds option 53's value for each message type (shared,
// never changed).
var messageTypeBytes = func() (m [256][]byte) {
	for t := range m {
		m[t] = []byte{byte(t)}
	}
	return m
}()

// replyPool recycles replies (and their option maps) that Serve has sent.
var replyPool = sync.Pool{New: func() any { return &dhcpv4.DHCPv4{Options: dhcpv4.Options{}} }}

// releaseReply returns a reply nobody uses any more to the pool.
func releaseReply(m *dhcpv4.DHCPv4) {
	if m != nil && m.Options != nil {
		replyPool.Put(m)
	}
}

// newReply starts a reply per RFC 2131 table 3, from the pool.
func newReply(req *dhcpv4.DHCPv4, t dhcpv4.MessageType, server netip.Addr) *dhcpv4.DHCPv4 {
	rep := replyPool.Get().(*dhcpv4.DHCPv4)
	opts := rep.Options
	clear(opts)
	*rep = dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       opts,
	}
	rep.Options[dhcpv4.OptionDHCPMessageType.Code()] = messageTypeBytes[t]
	if server.Is4() {
		a := server.As4()
		rep.Options[dhcpv4.OptionServerIdentifier.Code()] = a[:]
	} else {
		rep.UpdateOption(dhcpv4.OptServerIdentifier(server.AsSlice()))
	}
	// RFC 6842: the client identifier is echoed, or a client may discard the reply.
	if v := req.Options.Get(dhcpv4.OptionClientIdentifier); v != nil {
		rep.Options[dhcpv4.OptionClientIdentifier.Code()] = v
	}
	// RFC 3046 section 2.2: relay agent information goes back unchanged (the
	// encoder puts it last, as required).
	if v := req.Options.Get(dhcpv4.OptionRelayAgentInformation); v != nil {
		rep.Options[dhcpv4.OptionRelayAgentInformation.Code()] = v
	}
	return rep
}

// networkOptions adds the subnet's configuration; lease times only withLease
// (never in an answer to INFORM, 4.3.5).
func (s *Server) networkOptions(rep *dhcpv4.DHCPv4, r *request, lt time.Duration, withLease bool) {
	for _, o := range r.sn.networkWire() {
		rep.Options[o.code] = o.value
	}
	if h := r.replyHostname(); h != "" {
		rep.UpdateOption(dhcpv4.OptHostName(h))
	}
	if withLease {
		// T1 = 0.5 and T2 = 0.875 of the lease, the defaults of RFC 2131 4.4.5.
		var b [12]byte
		binary.BigEndian.PutUint32(b[0:], uint32(lt/time.Second))
		binary.BigEndian.PutUint32(b[4:], uint32(lt/2/time.Second))
		binary.BigEndian.PutUint32(b[8:], uint32(lt*7/8/time.Second))
		v := b[:]
		rep.Options[dhcpv4.OptionIPAddressLeaseTime.Code()] = v[0:4:4]
		rep.Options[dhcpv4.OptionRenewTimeValue.Code()] = v[4:8:8]
		rep.Options[dhcpv4.OptionRebindingTimeValue.Code()] = v[8:12:12]
	}
}

// ipxeNoProxyDHCP is iPXE's encapsulated option 175 with setting 176
// ("no-pxedhcp") = 1. Without it iPXE waits about 3 s for a proxyDHCP offer after
// a full offer (see NETBOOT-LAB.md); only a server that owns the address may say so.
var ipxeNoProxyDHCP = []byte{176, 1, 1}

// addBoot asks the Booter and puts the result into the reply. It returns the boot
// file ("" when there is none).
func (s *Server) addBoot(ctx context.Context, rep *dhcpv4.DHCPv4, r *request, full bool) string {
	server := r.sn.BootServer
	if !server.IsValid() {
		server = r.server
	}
	bi, err := s.booter().BootInfo(ctx, BootRequest{
		MAC: r.mac, Machine: r.mach, Discovery: r.discovery(), Subnet: r.sn, Class: r.class, Server: server,
	})
	if err != nil {
		s.log().Error("dhcp: boot information", "mac", r.mac.String(), "machine", r.machineName(), "err", err)
		return ""
	}
	if bi == nil || bi.Filename == "" {
		return ""
	}
	// siaddr is always set, to the boot server when the booter names no other: PXE
	// ROMs fetch the file from it, and the iPXE Debian ships (1.0.0+git-20190125)
	// accepts a proxyDHCP or boot-server reply only when it has both a next-server and
	// a filename (its dhcp_has_pxeopts), even when the filename is an HTTP URL.
	next := bi.NextServer
	if !next.Is4() && server.Is4() {
		next = server
	}
	if next.Is4() {
		rep.ServerIPAddr = next.AsSlice()
	}
	// The file field holds 128 bytes with a terminating NUL; a longer name (a long
	// URL) only fits option 67.
	if len(bi.Filename) < 128 {
		rep.BootFileName = bi.Filename
	}
	if len(bi.Filename) >= 128 || r.m.IsOptionRequested(dhcpv4.OptionBootfileName) {
		rep.UpdateOption(dhcpv4.OptBootFileName(bi.Filename))
	}
	if bi.NextServer.Is4() && r.m.IsOptionRequested(dhcpv4.OptionTFTPServerName) {
		rep.UpdateOption(dhcpv4.OptTFTPServerName(bi.NextServer.String()))
	}
	if bi.VendorClass != "" {
		rep.UpdateOption(dhcpv4.OptClassIdentifier(bi.VendorClass))
	}
	if full && r.class.IPXE {
		rep.Options[175] = ipxeNoProxyDHCP
	}
	return bi.Filename
}

// reply addresses a reply per RFC 2131 section 4.1: to the relay agent, to the
// client's address, or broadcast (Kiln never unicasts to a client that has no
// address yet: that needs a raw socket or an ARP entry, and broadcast always
// works). On the PXE port the reply goes back where the request came from.
func (s *Server) reply(r *request, rep *dhcpv4.DHCPv4) *Reply {
	out := &Reply{Msg: rep, From: r.server}
	gi, ci := addrOf(r.m.GatewayIPAddr), addrOf(r.m.ClientIPAddr)
	switch {
	case r.in.LocalPort != 0 && int(r.in.LocalPort) == s.pxePort():
		out.Dst = r.in.Src
		if src := r.in.Src.Addr(); !src.IsValid() || src.IsUnspecified() {
			out.Dst = netip.AddrPortFrom(broadcastAddr, r.in.Src.Port())
		}
	case gi.IsValid():
		out.Dst = netip.AddrPortFrom(gi, ServerPort)
	case rep.MessageType() == dhcpv4.MessageTypeNak:
		out.Dst = netip.AddrPortFrom(broadcastAddr, ClientPort)
	case ci.IsValid():
		out.Dst = netip.AddrPortFrom(ci, ClientPort)
	default:
		out.Dst = netip.AddrPortFrom(broadcastAddr, ClientPort)
	}
	return out
}
