package dhcp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/resource"
)

// Ports of the protocol.
const (
	ServerPort = 67   // DHCP server (RFC 2131 section 4.1)
	ClientPort = 68   // DHCP client
	PXEPort    = 4011 // PXE boot server ("BINL"; PXE 2.1 section 2.2.4), proxy mode
)

// Defaults of the Server's tunables.
const (
	DefaultLeaseTime         = time.Hour
	DefaultOfferHold         = time.Minute
	DefaultDeclineQuarantine = time.Hour
	DefaultDeclinesPerClient = 2
)

// Server answers DHCPv4 and PXE boot server requests. Set the fields, then call
// ListenAndServe or Serve (or HandlePacket, without sockets). A Server must not
// be copied after first use.
type Server struct {
	// Subnets is required.
	Subnets Subnets
	// Machines finds machines by MAC; nil: every MAC is unknown.
	Machines Machines
	// Leases is required for subnets in full mode.
	Leases Leases
	// Booter decides boot information; nil: a zero DefaultBooter.
	Booter Booter
	// Logger; nil: log nothing.
	Logger *slog.Logger
	// OnEvent, if not nil, is called for offers, acks, naks, declines and releases,
	// synchronously: it must be quick.
	OnEvent func(ctx context.Context, e Event)
	// MachineEventsOnly: OnEvent gets offers and acks only for known machines (for
	// unknown MACs the event is not even built).
	MachineEventsOnly bool

	// LeaseTime is used for subnets that set none; 0: DefaultLeaseTime.
	LeaseTime time.Duration
	// OfferHold is how long an offered address is kept for the client that was
	// offered it; 0: DefaultOfferHold.
	OfferHold time.Duration
	// DeclineQuarantine is how long a declined address is not handed out; 0:
	// DefaultDeclineQuarantine.
	DeclineQuarantine time.Duration
	// MaxDeclinedPerSubnet bounds the addresses of one subnet in quarantine at once
	// (so a flood of DECLINEs with forged MACs cannot drain a pool); 0: an eighth
	// of the pool, at least 1.
	MaxDeclinedPerSubnet int
	// MaxDeclinesPerClient bounds one MAC's declines within a quarantine period; 0:
	// DefaultDeclinesPerClient.
	MaxDeclinesPerClient int
	// ServerIP, if valid, is the server identifier (option 54) of every reply;
	// otherwise the receiving interface's address inside the subnet (or its first
	// IPv4 address) is used.
	ServerIP netip.Addr
	// PXEPort is the boot server port ListenAndServe also listens on; 0: 4011,
	// negative: none.
	PXEPort int
	// Workers is how many datagrams Serve handles at once; 0: DefaultWorkers.
	Workers int
	// Now returns the time; nil: time.Now. For tests.
	Now func() time.Time

	// Metrics are the counters; read them with Snapshot.
	Metrics Metrics

	declines declineLimiter
	ifaces   ifaceCache
}

// Inbound describes how a datagram arrived.
type Inbound struct {
	// Iface is the receiving interface's name ("" if unknown); IfaceAddrs its IPv4
	// addresses with their prefix lengths.
	Iface      string
	IfaceIndex int
	IfaceAddrs []netip.Prefix
	// Src is the sender's address and port.
	Src netip.AddrPort
	// LocalPort is the port it was sent to: ServerPort, or PXEPort for the PXE boot
	// server.
	LocalPort uint16
}

// Reply is an answer and where to send it.
type Reply struct {
	Msg *dhcpv4.DHCPv4
	Dst netip.AddrPort
	// From is the local address the reply should leave from (the server identifier).
	From netip.Addr
}

// noDrop is the reason of a request handled without a reply (RELEASE, DECLINE).
const noDrop DropReason = 255

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) pxePort() int {
	if s.PXEPort == 0 {
		return PXEPort
	}
	return s.PXEPort
}

var discardLogger = slog.New(slog.DiscardHandler)

func (s *Server) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return discardLogger
}

// logs reports whether a message at level would be logged: per-packet messages
// check it first, so that their attributes are not built for nothing.
func (s *Server) logs(ctx context.Context, level slog.Level) bool {
	return s.Logger != nil && s.Logger.Enabled(ctx, level)
}

func (s *Server) booter() Booter {
	if s.Booter != nil {
		return s.Booter
	}
	return &DefaultBooter{}
}

// wantEvent says whether an offer or ack event for r goes anywhere.
func (s *Server) wantEvent(r *request) bool {
	return s.OnEvent != nil && (!s.MachineEventsOnly || r.mach != nil)
}

func (s *Server) event(ctx context.Context, e Event) {
	if s.OnEvent != nil {
		s.OnEvent(ctx, e)
	}
}

// HandlePacket is the whole protocol for one datagram: it parses b, updates the
// leases and returns the reply to send, or nil. It counts the datagram in
// Metrics. It never panics on any input and changes no state for a malformed one.
// b is not copied: the parsed message's option values are slices of it and the
// leases may keep some (a client identifier), so the caller must not reuse b.
func (s *Server) HandlePacket(ctx context.Context, b []byte, in Inbound) *Reply {
	m, err := ParsePacket(b)
	if err != nil {
		s.Metrics.countReceived(0)
		r := DropReasonOf(err)
		s.Metrics.countDrop(r)
		if s.logs(ctx, slog.LevelDebug) {
			s.log().Debug("dhcp: dropped datagram", "src", in.Src, "iface", in.Iface, "reason", r.String(), "err", err)
		}
		return nil
	}
	mt := m.MessageType()
	s.Metrics.countReceived(mt)
	reply, reason := s.handle(ctx, m, in)
	if reply == nil {
		if reason != noDrop {
			s.Metrics.countDrop(reason)
			if s.logs(ctx, slog.LevelDebug) {
				s.log().Debug("dhcp: no reply", "mac", m.ClientHWAddr.String(), "type", mt.String(), "iface", in.Iface, "reason", reason.String())
			}
		}
		return nil
	}
	s.Metrics.countSent(reply.Msg.MessageType())
	return reply
}

// request is one message being handled, with what the server looked up for it.
type request struct {
	m       *dhcpv4.DHCPv4
	in      Inbound
	sn      *Subnet
	server  netip.Addr // our address: server identifier
	now     time.Time
	client  Client
	mac     net.HardwareAddr
	mach    *Machine // nil: unknown MAC
	class   ClientClass
	unknown bool // unknown MAC under the discovery or allocate policy
}

func (r *request) machineName() string {
	if r.mach != nil {
		return r.mach.Name
	}
	return ""
}

// discovery reports whether the client is an unknown machine under the discovery policy.
func (r *request) discovery() bool {
	return r.unknown && r.sn.UnknownMachines == resource.UnknownDiscovery
}

func (s *Server) handle(ctx context.Context, m *dhcpv4.DHCPv4, in Inbound) (*Reply, DropReason) {
	mt := m.MessageType()
	bootServerPort := in.LocalPort != 0 && int(in.LocalPort) == s.pxePort()
	if bootServerPort {
		if mt != dhcpv4.MessageTypeRequest && mt != dhcpv4.MessageTypeInform {
			return nil, DropUnsupportedType
		}
	} else {
		switch mt {
		case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeDecline,
			dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform:
		default:
			return nil, DropUnsupportedType
		}
	}
	if s.Subnets == nil {
		return nil, DropNoSubnet
	}
	subnets, err := s.Subnets.Subnets(ctx)
	if err != nil {
		s.log().Error("dhcp: read subnets", "err", err)
		return nil, DropBackendError
	}
	r := &request{m: m, in: in, now: s.now(), mac: m.ClientHWAddr, class: classify(m)}
	r.client = Client{MAC: m.ClientHWAddr, ClientID: m.Options.Get(dhcpv4.OptionClientIdentifier)}
	r.sn = selectSubnet(subnets, m, in, bootServerPort)
	if r.sn == nil {
		return nil, DropNoSubnet
	}
	if r.sn.Mode == resource.ModeOff {
		return nil, DropModeOff
	}
	r.server = s.serverAddr(r.sn, in)
	if !r.server.IsValid() {
		return nil, DropNoServerAddress
	}
	// RELEASE and DECLINE concern a lease the client holds, whoever the client
	// is now; the unknown-machine policy applies to getting addresses and boot files.
	enforce := mt != dhcpv4.MessageTypeRelease && mt != dhcpv4.MessageTypeDecline
	if reason := s.lookupMachine(ctx, r, enforce); reason != noDrop {
		return nil, reason
	}
	switch {
	case bootServerPort:
		return s.bootServer(ctx, r)
	case r.sn.Mode == resource.ModeProxy:
		return s.proxy(ctx, r)
	default:
		return s.full(ctx, r)
	}
}

// lookupMachine finds the client's machine and applies the subnet's policy for
// unknown MACs.
func (s *Server) lookupMachine(ctx context.Context, r *request, enforce bool) DropReason {
	if s.Machines != nil {
		mach, err := s.Machines.MachineByMAC(ctx, r.mac)
		switch {
		case errors.Is(err, ErrUnknownMachine):
		case err != nil:
			s.log().Error("dhcp: look up machine", "mac", r.mac.String(), "err", err)
			return DropBackendError
		default:
			r.mach = mach
		}
	}
	if r.mach == nil && enforce {
		switch r.sn.UnknownMachines {
		case resource.UnknownDiscovery, resource.UnknownAllocate:
			r.unknown = true
		default:
			return DropUnknownIgnored
		}
	}
	return noDrop
}

// selectSubnet picks the subnet a request belongs to (RFC 2131 section 4.3.1):
// the one containing giaddr for a relayed request; otherwise the one bound to the
// receiving interface, the one containing an address of that interface, or the
// only one. On the PXE port the client already has an address, which decides.
func selectSubnet(subnets []*Subnet, m *dhcpv4.DHCPv4, in Inbound, bootServerPort bool) *Subnet {
	if gi, ok := netip.AddrFromSlice(m.GatewayIPAddr.To4()); ok && !gi.IsUnspecified() {
		for _, sn := range subnets {
			if sn.Contains(gi) {
				return sn
			}
		}
		return nil
	}
	if bootServerPort {
		for _, a := range []netip.Addr{in.Src.Addr().Unmap(), addrOf(m.ClientIPAddr)} {
			for _, sn := range subnets {
				if a.IsValid() && sn.Contains(a) {
					return sn
				}
			}
		}
	}
	if in.Iface != "" {
		for _, sn := range subnets {
			if slices.Contains(sn.Interfaces, in.Iface) {
				return sn
			}
		}
	}
	for _, sn := range subnets {
		if len(sn.Interfaces) > 0 {
			continue // bound to other interfaces
		}
		for _, p := range in.IfaceAddrs {
			if sn.Contains(p.Addr()) {
				return sn
			}
		}
	}
	if len(subnets) == 1 && len(subnets[0].Interfaces) == 0 {
		return subnets[0]
	}
	return nil
}

// serverAddr is the address the server answers a subnet's request from.
func (s *Server) serverAddr(sn *Subnet, in Inbound) netip.Addr {
	if s.ServerIP.IsValid() {
		return s.ServerIP
	}
	for _, p := range in.IfaceAddrs {
		if sn.Contains(p.Addr()) {
			return p.Addr()
		}
	}
	for _, p := range in.IfaceAddrs {
		if p.Addr().Is4() {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

// addrOf converts a header address; the zero Addr for 0.0.0.0 or garbage.
func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// optAddr reads a 4-byte address option; the zero Addr when absent.
func optAddr(m *dhcpv4.DHCPv4, code dhcpv4.OptionCode) netip.Addr {
	v := m.Options.Get(code)
	if len(v) != 4 {
		return netip.Addr{}
	}
	a := netip.AddrFrom4([4]byte(v))
	if a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// ---- decline limits ---------------------------------------------------------------

// declineLimiter bounds the addresses in decline quarantine, per subnet and per
// MAC, counting quarantines that have not ended yet.
type declineLimiter struct {
	mu       sync.Mutex
	bySubnet map[string][]time.Time // ends of the quarantines in force
	byMAC    map[string][]time.Time
}

func prune(ts []time.Time, now time.Time) []time.Time {
	return slices.DeleteFunc(ts, func(t time.Time) bool { return !now.Before(t) })
}

// admit runs quarantine (which puts an address in quarantine until until) if
// the limits allow one more, and records it when it succeeds.
func (d *declineLimiter) admit(subnet, mac string, now, until time.Time, maxSubnet, maxMAC int, quarantine func() error) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bySubnet == nil {
		d.bySubnet, d.byMAC = map[string][]time.Time{}, map[string][]time.Time{}
	}
	sub := prune(d.bySubnet[subnet], now)
	d.bySubnet[subnet] = sub
	for k, ts := range d.byMAC { // bounded: every entry was admitted under a subnet limit
		if ts = prune(ts, now); len(ts) == 0 {
			delete(d.byMAC, k)
		} else {
			d.byMAC[k] = ts
		}
	}
	if len(sub) >= maxSubnet || len(d.byMAC[mac]) >= maxMAC {
		return false, nil
	}
	if err := quarantine(); err != nil {
		return true, err
	}
	d.bySubnet[subnet] = append(sub, until)
	d.byMAC[mac] = append(d.byMAC[mac], until)
	return true, nil
}
