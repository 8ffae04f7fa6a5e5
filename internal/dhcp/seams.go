package dhcp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// ---- machines -----------------------------------------------------------------

// Machine is what the DHCP server needs to know about the machine a MAC belongs to.
type Machine struct {
	Name string
	// IP is the address reserved for this MAC (the interface's spec ip); the zero
	// Addr when there is none. It is used only inside a subnet that contains it.
	IP netip.Addr
	// Hostname is sent as option 12; empty: the machine name, when it is a valid
	// host name.
	Hostname string
	// UKI: the machine's profile boots a Unified Kernel Image (spec.boot.uki). A
	// UEFI HTTP boot client then gets the image's URL instead of iPXE's: the
	// firmware loads it itself, and under Secure Boot verifies its signature.
	UKI bool
}

// ErrUnknownMachine is returned by a [Machines] when no machine claims a MAC.
var ErrUnknownMachine = errors.New("no machine has this MAC address")

// Machines finds the machine a MAC belongs to. It returns [ErrUnknownMachine]
// (or a nil Machine and a nil error) when there is none.
type Machines interface {
	MachineByMAC(ctx context.Context, mac net.HardwareAddr) (*Machine, error)
}

// Reservations is optionally implemented by a [Machines]. ReservedBy names the
// machine an address is reserved for ("" for none), so that the pool allocator
// does not hand a machine's reserved address to another client.
type Reservations interface {
	ReservedBy(ctx context.Context, ip netip.Addr) (machine string, err error)
}

// ---- leases -------------------------------------------------------------------

// Client identifies a DHCP client.
//
// RFC 2131 section 4.2 prefers the client identifier (option 61) over chaddr, but
// in network boot one NIC speaks through several clients in turn (the firmware's
// PXE stack sends no option 61, iPXE and the installed OS send different ones) and
// they must all get the same address. So Kiln matches a lease by MAC, and by
// client identifier only as a second chance (a bond whose MAC changed).
type Client struct {
	MAC      net.HardwareAddr
	ClientID []byte // option 61; nil when absent
}

// Owns reports whether lease l belongs to the client.
func (c Client) Owns(l *Lease) bool {
	if l == nil {
		return false
	}
	if len(l.MAC) > 0 && bytes.Equal(l.MAC, c.MAC) {
		return true
	}
	return len(l.ClientID) > 0 && bytes.Equal(l.ClientID, c.ClientID)
}

// Lease is one address given to one client (resource.LeaseSpec in the store).
type Lease struct {
	IP        netip.Addr
	Subnet    string
	MAC       net.HardwareAddr
	ClientID  []byte
	Hostname  string
	State     string // resource.LeaseOffered, LeaseBound, LeaseReleased, LeaseDeclined
	ExpiresAt time.Time
	// Discovery marks a lease of an unknown machine under the discovery policy:
	// the boot side serves it the subnet's discovery profile.
	Discovery bool
}

// Available reports whether the address may be given to another client at now:
// the lease expired, was released, or its decline quarantine is over.
func (l *Lease) Available(now time.Time) bool {
	if l == nil {
		return true
	}
	return !now.Before(l.ExpiresAt) || l.State == resource.LeaseReleased
}

// Errors of a [Leases].
var (
	// ErrNoAddress: the pools have no address left for this client.
	ErrNoAddress = errors.New("no free address in the pools")
	// ErrAddressTaken: the address is held by another client or quarantined.
	ErrAddressTaken = errors.New("address is held by another client")
	// ErrNoLease: there is no lease of this client (for this address).
	ErrNoLease = errors.New("no lease for this client")
)

// OfferRequest asks for an address to offer (DHCPDISCOVER).
type OfferRequest struct {
	Subnet   *Subnet
	Client   Client
	Hostname string
	// Reserved is the client's reserved address in this subnet (zero: none); it is
	// offered first and may lie outside the pools.
	Reserved netip.Addr
	// Requested is option 50, a hint: the address the client had before.
	Requested netip.Addr
	Now       time.Time
	// Until is when an offered (not yet bound) lease lapses: a short hold.
	Until     time.Time
	Discovery bool
	// Skip, if not nil, rejects pool addresses that must not be offered to this
	// client (reserved for another machine).
	Skip func(netip.Addr) bool
}

// CommitRequest binds an address (DHCPREQUEST in any state of RFC 2131 4.3.2).
type CommitRequest struct {
	Subnet   *Subnet
	Client   Client
	IP       netip.Addr
	Hostname string
	Now      time.Time
	Until    time.Time // the lease's new expiry
	// Existing: only extend a lease the client already holds on IP; a free address
	// is not taken ([ErrNoLease]). Used for INIT-REBOOT, where a server without a
	// record of the client must stay silent (RFC 2131 4.3.2).
	Existing  bool
	Discovery bool
}

// ReleaseRequest frees a client's address (DHCPRELEASE, or an offer the client
// turned down by selecting another server).
type ReleaseRequest struct {
	Subnet *Subnet
	Client Client
	IP     netip.Addr
	Now    time.Time
	// OnlyOffered leaves a bound lease alone.
	OnlyOffered bool
}

// DeclineRequest quarantines an address the client found in use (DHCPDECLINE):
// nobody gets it before Until.
type DeclineRequest struct {
	Subnet *Subnet
	Client Client
	IP     netip.Addr
	Now    time.Time
	Until  time.Time
}

// Leases keeps the address assignments. Implementations must be safe for
// concurrent use and must never give one address to two clients at once. A
// method returns only once its change is durable: the server sends DHCPACK after
// Commit returns.
type Leases interface {
	// Offer returns the client's current lease in the subnet (extended to at least
	// Until), its reservation, the requested address or a free pool address, in
	// that order, held as offered until Until. Expired and released leases of
	// other clients are reused, after addresses nobody has used. ErrNoAddress when
	// the pools are full.
	Offer(ctx context.Context, req OfferRequest) (*Lease, error)
	// Commit binds IP to the client until Until: a new lease, the client's own
	// lease renewed, or an expired one taken over. ErrAddressTaken when another
	// client holds it; ErrNoLease when req.Existing and the client holds no lease
	// on IP.
	Commit(ctx context.Context, req CommitRequest) (*Lease, error)
	// Release frees the client's lease on IP. ErrNoLease if it has none there.
	Release(ctx context.Context, req ReleaseRequest) error
	// Decline quarantines IP until req.Until. ErrNoLease if the client holds no
	// lease on IP (a client cannot quarantine somebody else's address).
	Decline(ctx context.Context, req DeclineRequest) error
	// Lookup returns the client's lease in a subnet, or ErrNoLease.
	Lookup(ctx context.Context, subnet string, c Client) (*Lease, error)
}

// ---- subnets ------------------------------------------------------------------

// Subnets returns the configured subnets. It is asked for every packet, so an
// implementation reading them from elsewhere caches them.
type Subnets interface {
	Subnets(ctx context.Context) ([]*Subnet, error)
}

// StaticSubnets is a fixed list of subnets.
type StaticSubnets []*Subnet

// Subnets returns the list.
func (s StaticSubnets) Subnets(context.Context) ([]*Subnet, error) { return s, nil }

// ---- boot ---------------------------------------------------------------------

// Booter decides what a client loads next. It returns a nil BootInfo (and no
// error) for a client that should get no boot information.
type Booter interface {
	BootInfo(ctx context.Context, req BootRequest) (*BootInfo, error)
}

// BootRequest is what a Booter knows of a client.
type BootRequest struct {
	MAC     net.HardwareAddr
	Machine *Machine // nil for an unknown MAC
	// Discovery: an unknown machine under the subnet's discovery policy; the boot
	// side serves it Subnet.DiscoveryProfile.
	Discovery bool
	Subnet    *Subnet
	Class     ClientClass
	// Server is the boot server address: Subnet.BootServer, else the address of
	// the interface the request came in on.
	Server netip.Addr
}

// BootInfo is the boot part of a reply.
type BootInfo struct {
	// NextServer is siaddr, the TFTP server (zero: the boot server).
	NextServer netip.Addr
	// Filename is the file field (and option 67 when asked for): a TFTP path or
	// an http:// URL.
	Filename string
	// VendorClass, if set, is sent as option 60. UEFI HTTP boot requires
	// "HTTPClient" in the offer (UEFI 2.x section 24.7.2); proxy replies always
	// carry "PXEClient".
	VendorClass string
}

// ---- events -------------------------------------------------------------------

// Event types passed to Server.OnEvent.
const (
	EventOffer   = "DHCPOffer"
	EventAck     = "DHCPAck"
	EventNak     = "DHCPNak"
	EventDecline = "DHCPDecline"
	EventRelease = "DHCPRelease"
)

// Event is something that happened to a machine's network identity; Kiln turns
// it into an entry of the machine's timeline.
type Event struct {
	MAC     net.HardwareAddr
	Machine string // "" for an unknown MAC
	IP      netip.Addr
	Type    string
	Message string
}
