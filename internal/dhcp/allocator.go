package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// LeaseTable is the record one lease operation reads and writes: a store
// transaction (dhcpstore.Leases) or a map (MemoryLeases). The record is the
// authority; the allocator's hints only decide which addresses to look at first.
// A Leases implementation outside this package runs the [Allocator] on its own
// LeaseTable.
type LeaseTable interface {
	// Get returns the lease on ip and an opaque token for Update; a nil lease when
	// there is none.
	Get(ctx context.Context, ip netip.Addr) (*Lease, any, error)
	// Create stores a new lease and returns its token; ErrTableExists when the
	// address has a record.
	Create(ctx context.Context, l *Lease) (any, error)
	// Update replaces the lease read with token and returns the new token;
	// ErrTableConflict when it changed since.
	Update(ctx context.Context, l *Lease, token any) (any, error)
}

// Errors of a [LeaseTable]: the record it was asked to create exists, or the
// record it was asked to update changed since it was read.
var (
	ErrTableExists   = errors.New("lease record exists")
	ErrTableConflict = errors.New("lease record changed")
)

// defaultMaxProbes bounds the records one Offer reads while walking a pool whose
// hints are stale (another replica allocated from it); the next Offer goes on
// from where this one stopped.
const defaultMaxProbes = 64

// hint is what the allocator last saw of an address's record.
type hint struct {
	mac     string
	state   string
	expires time.Time
}

func (h hint) available(now time.Time) bool {
	return !now.Before(h.expires) || h.state == resource.LeaseReleased
}

// Allocator holds the lease algorithm shared by the Leases implementations and
// its in-memory hints: who holds which address, and a per-subnet cursor, so that
// an allocation reads a handful of records instead of the whole table. Callers
// serialize its use (one operation at a time, with the table's transaction).
// [NewAllocator] returns one.
type Allocator struct {
	maxProbes int
	byIP      map[netip.Addr]hint
	byClient  map[string]netip.Addr // clientKey → address
	cursor    map[string]netip.Addr // subnet → last address handed out
	// written holds the records this allocator wrote last (the lease and its
	// token), so that the REQUEST following an OFFER updates the record without
	// reading it first: the token makes the update fail if the record changed
	// since, and the operation then reads it.
	written map[netip.Addr]record
	// older is the previous generation of written: when written is full it becomes
	// older, so the records written last are always kept.
	older map[netip.Addr]record
}

type record struct {
	l     *Lease
	token any
}

// maxWritten bounds each generation of allocator.written.
const maxWritten = 1 << 13

// NewAllocator returns an Allocator with no hints.
func NewAllocator() *Allocator {
	return &Allocator{
		maxProbes: defaultMaxProbes,
		byIP:      map[netip.Addr]hint{},
		byClient:  map[string]netip.Addr{},
		cursor:    map[string]netip.Addr{},
		written:   map[netip.Addr]record{},
	}
}

// wrote records a write: the hints learn it, and written keeps it.
func (a *Allocator) wrote(l *Lease, token any) {
	a.Learn(l)
	if len(a.written) >= maxWritten {
		a.older, a.written = a.written, make(map[netip.Addr]record, maxWritten)
	}
	a.written[l.IP] = record{l: CloneLease(l), token: token}
}

// Forget drops what written keeps of ip: the next operation on it reads the
// record.
func (a *Allocator) Forget(ip netip.Addr) {
	delete(a.written, ip)
	delete(a.older, ip)
}

func clientKey(subnet string, mac []byte) string { return subnet + "|" + string(mac) }

// Learn records what a read or write showed about an address.
func (a *Allocator) Learn(l *Lease) {
	if l == nil {
		return
	}
	if old, ok := a.byIP[l.IP]; ok && old.mac != string(l.MAC) {
		if k := clientKey(l.Subnet, []byte(old.mac)); a.byClient[k] == l.IP {
			delete(a.byClient, k)
		}
	}
	a.byIP[l.IP] = hint{mac: string(l.MAC), state: l.State, expires: l.ExpiresAt}
	k := clientKey(l.Subnet, l.MAC)
	if l.State == resource.LeaseDeclined {
		if a.byClient[k] == l.IP {
			delete(a.byClient, k)
		}
		return
	}
	if prev, ok := a.byClient[k]; ok && prev != l.IP {
		// A client may have several records (an old lease it left, a new one): the
		// hint points at the one that lasts longest.
		if h, ok := a.byIP[prev]; ok && h.mac == string(l.MAC) && h.state != resource.LeaseDeclined && h.expires.After(l.ExpiresAt) {
			return
		}
	}
	a.byClient[k] = l.IP
}

// Reset drops all hints (before a resync).
func (a *Allocator) Reset() {
	clear(a.byIP)
	clear(a.byClient)
	clear(a.written)
	a.older = nil
}

type takeMode int

const (
	takeOffer    takeMode = iota // DISCOVER: hold as offered, keep a bound lease bound
	takeCommit                   // REQUEST: bind
	takeExisting                 // REQUEST in INIT-REBOOT: bind only the client's own lease
)

// take gives ip to the client if the record allows it.
//
// The record is not read first when the allocator knows it without a read: an
// address it has no hint for is assumed free (the create fails if another server
// took it), a record it wrote itself is assumed unchanged (the update fails if it
// changed). Only a decision that wrote is kept from such a guess; any other
// outcome (a refusal, a failed write, nothing to write) is decided again on the
// record read from the table.
func (a *Allocator) take(ctx context.Context, t LeaseTable, ip netip.Addr, c Client, sn *Subnet, mode takeMode, now, until time.Time, hostname string, discovery bool) (*Lease, error) {
	if cur, token, ok := a.guess(ip); ok {
		l, wrote, err := a.decide(ctx, t, ip, cur, token, c, sn, mode, now, until, hostname, discovery)
		if wrote && err == nil {
			return l, nil
		}
		if err != nil && !errors.Is(err, ErrAddressTaken) && !errors.Is(err, ErrNoLease) && !errors.Is(err, ErrTableConflict) {
			return nil, err
		}
	}
	cur, token, err := t.Get(ctx, ip)
	if err != nil {
		return nil, err
	}
	a.Learn(cur)
	l, _, err := a.decide(ctx, t, ip, cur, token, c, sn, mode, now, until, hostname, discovery)
	return l, err
}

// guess returns the record of ip as far as the allocator knows it without a
// read; ok false when it does not.
func (a *Allocator) guess(ip netip.Addr) (cur *Lease, token any, ok bool) {
	if r, found := a.written[ip]; found {
		return CloneLease(r.l), r.token, true
	}
	if r, found := a.older[ip]; found {
		return CloneLease(r.l), r.token, true
	}
	if _, known := a.byIP[ip]; !known {
		return nil, nil, true
	}
	return nil, nil, false
}

// decide gives ip to the client if cur (the record, read with token) allows it;
// wrote reports whether it wrote the table.
func (a *Allocator) decide(ctx context.Context, t LeaseTable, ip netip.Addr, cur *Lease, token any, c Client, sn *Subnet, mode takeMode, now, until time.Time, hostname string, discovery bool) (*Lease, bool, error) {
	switch {
	case cur == nil:
		if mode == takeExisting {
			return nil, false, ErrNoLease
		}
		l := &Lease{IP: ip, Subnet: sn.Name, MAC: c.MAC, ClientID: c.ClientID, Hostname: hostname, Discovery: discovery}
		l.State, l.ExpiresAt = resource.LeaseOffered, until
		if mode != takeOffer {
			l.State = resource.LeaseBound
		}
		tok, err := t.Create(ctx, l)
		if err != nil {
			if errors.Is(err, ErrTableExists) {
				return nil, false, ErrAddressTaken // created by another server since our read
			}
			return nil, false, err
		}
		a.wrote(l, tok)
		return l, true, nil
	case cur.State == resource.LeaseDeclined && now.Before(cur.ExpiresAt):
		// RFC 2131 4.3.3: a declined address is "not available" to anyone, the client
		// that declined it included, until its quarantine ends.
		return nil, false, ErrAddressTaken
	case c.Owns(cur):
		l := *cur
		l.MAC, l.ClientID, l.Subnet = c.MAC, c.ClientID, sn.Name
		if hostname != "" {
			l.Hostname = hostname
		}
		l.Discovery = discovery
		switch {
		case mode != takeOffer:
			l.State, l.ExpiresAt = resource.LeaseBound, until
		case cur.State == resource.LeaseBound && now.Before(cur.ExpiresAt):
			// A DISCOVER from a bound client (it rebooted): offer its lease, which stays
			// bound and is not shortened.
			if until.After(l.ExpiresAt) {
				l.ExpiresAt = until
			}
		default:
			l.State, l.ExpiresAt = resource.LeaseOffered, until
		}
		if l.State == cur.State && l.ExpiresAt.Equal(cur.ExpiresAt) && l.Hostname == cur.Hostname &&
			l.Discovery == cur.Discovery && slices.Equal(l.MAC, cur.MAC) && slices.Equal(l.ClientID, cur.ClientID) {
			return &l, false, nil // nothing to write
		}
		tok, err := t.Update(ctx, &l, token)
		if err != nil {
			return nil, false, err
		}
		a.wrote(&l, tok)
		return &l, true, nil
	case mode == takeExisting:
		return nil, false, ErrAddressTaken
	case cur.Available(now):
		// Another client's lease expired or was released: take it over.
		l := &Lease{IP: ip, Subnet: sn.Name, MAC: c.MAC, ClientID: c.ClientID, Hostname: hostname, Discovery: discovery}
		l.State, l.ExpiresAt = resource.LeaseOffered, until
		if mode != takeOffer {
			l.State = resource.LeaseBound
		}
		tok, err := t.Update(ctx, l, token)
		if err != nil {
			return nil, false, err
		}
		a.wrote(l, tok)
		return l, true, nil
	default:
		return nil, false, ErrAddressTaken
	}
}

// Offer implements Leases.Offer on a table.
func (a *Allocator) Offer(ctx context.Context, t LeaseTable, req OfferRequest) (*Lease, error) {
	sn, c := req.Subnet, req.Client
	skip := func(ip netip.Addr) bool { return req.Skip != nil && req.Skip(ip) }
	try := func(ip netip.Addr) (*Lease, error) {
		return a.take(ctx, t, ip, c, sn, takeOffer, req.Now, req.Until, req.Hostname, req.Discovery)
	}
	tried := map[netip.Addr]bool{}
	// 1. The reservation. When another client still holds it (the reservation is
	// newer than that lease), fall back to the pools until the lease ends.
	if ip := req.Reserved; ip.IsValid() && sn.Contains(ip) {
		tried[ip] = true
		if l, err := try(ip); !errors.Is(err, ErrAddressTaken) {
			return l, err
		}
	}
	// 2. The client's current or previous lease, then 3. the address it asks for.
	for _, ip := range []netip.Addr{a.byClient[clientKey(sn.Name, c.MAC)], req.Requested} {
		if !ip.IsValid() || tried[ip] || !sn.InPool(ip) || skip(ip) {
			continue
		}
		tried[ip] = true
		if l, err := try(ip); !errors.Is(err, ErrAddressTaken) {
			return l, err
		}
	}
	// 4. Walk the pools from the cursor: first addresses nobody has used, then
	// those of expired or released leases (their old owners would rather get
	// them back, so they go last).
	size := sn.PoolSize()
	if size == 0 {
		return nil, ErrNoAddress
	}
	start, ok := a.cursor[sn.Name]
	if !ok || !sn.InPool(start) {
		start = sn.Pools[len(sn.Pools)-1].End // the walk starts at the address after it
	}
	probes := 0
	for pass := range 2 {
		ip := start
		for range size {
			ip = sn.nextInPool(ip)
			if tried[ip] || skip(ip) {
				continue
			}
			if h, known := a.byIP[ip]; known && h.mac != string(c.MAC) {
				if pass == 0 || !h.available(req.Now) {
					continue
				}
			}
			tried[ip] = true
			l, err := try(ip)
			if err == nil {
				a.cursor[sn.Name] = ip
				return l, nil
			}
			if !errors.Is(err, ErrAddressTaken) {
				return nil, err
			}
			if probes++; probes >= a.maxProbes {
				a.cursor[sn.Name] = ip
				return nil, fmt.Errorf("%w (%d addresses tried were taken)", ErrNoAddress, probes)
			}
		}
	}
	return nil, ErrNoAddress
}

// Commit implements Leases.Commit on a table.
func (a *Allocator) Commit(ctx context.Context, t LeaseTable, req CommitRequest) (*Lease, error) {
	mode := takeCommit
	if req.Existing {
		mode = takeExisting
	}
	return a.take(ctx, t, req.IP, req.Client, req.Subnet, mode, req.Now, req.Until, req.Hostname, req.Discovery)
}

// Release implements Leases.Release on a table.
func (a *Allocator) Release(ctx context.Context, t LeaseTable, req ReleaseRequest) error {
	cur, token, err := t.Get(ctx, req.IP)
	if err != nil {
		return err
	}
	a.Learn(cur)
	if cur == nil || !req.Client.Owns(cur) {
		return ErrNoLease
	}
	switch cur.State {
	case resource.LeaseReleased, resource.LeaseDeclined:
		return nil
	case resource.LeaseBound:
		if req.OnlyOffered {
			return ErrNoLease
		}
	}
	l := *cur
	// The owner is kept: a client coming back gets the same address if nobody
	// took it meanwhile.
	l.State, l.ExpiresAt = resource.LeaseReleased, req.Now
	tok, err := t.Update(ctx, &l, token)
	if err != nil {
		return err
	}
	a.wrote(&l, tok)
	return nil
}

// Decline implements Leases.Decline on a table.
func (a *Allocator) Decline(ctx context.Context, t LeaseTable, req DeclineRequest) error {
	cur, token, err := t.Get(ctx, req.IP)
	if err != nil {
		return err
	}
	a.Learn(cur)
	if cur == nil || !req.Client.Owns(cur) || cur.Available(req.Now) {
		return ErrNoLease
	}
	if cur.State == resource.LeaseDeclined {
		return nil
	}
	l := *cur
	l.State, l.ExpiresAt = resource.LeaseDeclined, req.Until
	tok, err := t.Update(ctx, &l, token)
	if err != nil {
		return err
	}
	a.wrote(&l, tok)
	return nil
}

// Lookup implements Leases.Lookup from the hints, checked against the table.
func (a *Allocator) Lookup(ctx context.Context, t LeaseTable, subnet string, c Client) (*Lease, error) {
	ip, ok := a.byClient[clientKey(subnet, c.MAC)]
	if !ok {
		return nil, ErrNoLease
	}
	cur, _, err := t.Get(ctx, ip)
	if err != nil {
		return nil, err
	}
	a.Learn(cur)
	if cur == nil || !c.Owns(cur) || cur.Subnet != subnet || cur.State == resource.LeaseDeclined {
		return nil, ErrNoLease
	}
	return cur, nil
}
