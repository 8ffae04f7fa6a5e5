package dhcpstore

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Offers of a dhcpstore.Leases are held in memory, not in the store.
//
// A DHCPOFFER writes nothing: the offered address is held for the client in a
// per-server table (the hold ends at OfferRequest.Until, the server's OfferHold)
// and the DHCPREQUEST that follows is the only write, which creates the Lease
// object (or updates the record the offer was decided on, at the
// resourceVersion read then). The store stays the authority for what is bound:
// an offer avoids the addresses the hints know to be leased and those held for
// another client by this server, but two servers sharing one database may offer
// the same address to two clients. Then the second REQUEST finds the record the
// first one created (the Create fails with store.ErrExists, or the update at the
// old resourceVersion with store.ErrConflict), is decided again on that record
// and gets a DHCPNAK; the client goes back to INIT and sends a new DHCPDISCOVER,
// as RFC 2131 4.3.2 has a client do on a DHCPNAK ("the client MUST restart the
// configuration process"), and the server, having read the record, offers it
// another address. So an address is never bound to two clients, and a lease is
// stored before its DHCPACK leaves, as before.

// hold is an offered address kept for a client.
type hold struct {
	l     *dhcp.Lease // the lease as offered (offered, or the client's bound lease extended)
	until time.Time   // the hold ends
	// base is the store token (*resource.Object) of the record the offer was
	// decided on; nil when the address had no record. The REQUEST writes at it.
	base any
}

// sameRecord reports whether two store tokens name the same version of a record
// (or both no record).
func sameRecord(a, b any) bool {
	x, _ := a.(*resource.Object)
	y, _ := b.(*resource.Object)
	if x == nil || y == nil {
		return x == nil && y == nil
	}
	return x.Metadata.ResourceVersion == y.Metadata.ResourceVersion
}

// liveHold returns the hold on ip if it has not ended at now (zero now: any
// hold); an ended one is dropped. Callers hold s.mu.
func (s *Leases) liveHold(ip netip.Addr, now time.Time) *hold {
	h := s.holds[ip]
	if h == nil {
		return nil
	}
	if !now.IsZero() && !now.Before(h.until) {
		delete(s.holds, ip)
		return nil
	}
	return h
}

// overlay puts a live hold over the record read from the store (cur, with token
// tok): the address is held as offered. A hold decided on another version of the
// record than the one read is stale (another server wrote since) and is dropped.
func (s *Leases) overlay(ip netip.Addr, cur *dhcp.Lease, tok any, now time.Time) (*dhcp.Lease, any) {
	h := s.liveHold(ip, now)
	if h == nil {
		return cur, tok
	}
	if !sameRecord(h.base, tok) {
		delete(s.holds, ip)
		return cur, tok
	}
	return dhcp.CloneLease(h.l), h
}

// pruneHolds drops the holds that have ended (offers not followed by a REQUEST),
// at most every holdPruneEvery.
func (s *Leases) pruneHolds(now time.Time) {
	if d := now.Sub(s.lastPrune); d >= 0 && d < holdPruneEvery && len(s.holds) < maxHoldsBeforePrune {
		return
	}
	s.lastPrune = now
	for ip, h := range s.holds {
		if !now.Before(h.until) {
			delete(s.holds, ip)
		}
	}
}

const (
	holdPruneEvery      = 5 * time.Second
	maxHoldsBeforePrune = 1 << 18
)

// offerTable is the leaseTable of an Offer: it reads the store (through the
// holds) and writes holds only.
type offerTable struct {
	s          *Leases
	now, until time.Time
}

func (t offerTable) Get(ctx context.Context, ip netip.Addr) (*dhcp.Lease, any, error) {
	// The record is read even under a live hold: a hold another server's write
	// made stale (it bound the address meanwhile, perhaps to this very client) is
	// dropped here rather than keep the address from its holder.
	var cur *dhcp.Lease
	var tok any
	err := t.s.st.View(ctx, func(tx store.Tx) error {
		var err error
		cur, tok, err = txTable{tx}.Get(ctx, ip)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	cur, tok = t.s.overlay(ip, cur, tok, t.now)
	return cur, tok, nil
}

func (t offerTable) Create(_ context.Context, l *dhcp.Lease) (any, error) {
	if t.s.liveHold(l.IP, t.now) != nil {
		return nil, dhcp.ErrTableExists
	}
	h := &hold{l: dhcp.CloneLease(l), until: t.until}
	t.s.holds[l.IP] = h
	return h, nil
}

func (t offerTable) Update(_ context.Context, l *dhcp.Lease, token any) (any, error) {
	cur := t.s.liveHold(l.IP, t.now)
	base := token
	if h, ok := token.(*hold); ok {
		if cur != nil && cur != h {
			return nil, dhcp.ErrTableConflict
		}
		base = h.base
	} else if cur != nil {
		return nil, dhcp.ErrTableConflict // decided on the record, not on the hold over it
	}
	h := &hold{l: dhcp.CloneLease(l), until: t.until, base: base}
	t.s.holds[l.IP] = h
	return h, nil
}

// heldTable is the leaseTable of the operations that write the store (Commit,
// Release, Decline) and of Lookup: the store's records with the holds over them.
// Writing at a hold writes at the record the offer was decided on; a write drops
// the hold on its address.
type heldTable struct {
	dhcp.LeaseTable
	s   *Leases
	now time.Time // holds ended at now are not seen; zero: all are
}

func (t heldTable) Get(ctx context.Context, ip netip.Addr) (*dhcp.Lease, any, error) {
	cur, tok, err := t.LeaseTable.Get(ctx, ip)
	if err != nil {
		return nil, nil, err
	}
	cur, tok = t.s.overlay(ip, cur, tok, t.now)
	return cur, tok, nil
}

func (t heldTable) Create(ctx context.Context, l *dhcp.Lease) (any, error) {
	tok, err := t.LeaseTable.Create(ctx, l)
	if err == nil {
		delete(t.s.holds, l.IP)
	}
	return tok, err
}

func (t heldTable) Update(ctx context.Context, l *dhcp.Lease, token any) (any, error) {
	var tok any
	var err error
	if h, ok := token.(*hold); ok {
		if h.base == nil {
			tok, err = t.LeaseTable.Create(ctx, l)
			if errors.Is(err, dhcp.ErrTableExists) {
				// Another server created the record since the offer: decide again on it.
				err = dhcp.ErrTableConflict
			}
		} else {
			tok, err = t.LeaseTable.Update(ctx, l, h.base)
		}
	} else {
		tok, err = t.LeaseTable.Update(ctx, l, token)
	}
	if err == nil {
		delete(t.s.holds, l.IP)
	}
	return tok, err
}

// dropHold ends the client's hold on ip without a store write (the client took
// another server's offer, or released an address it was only offered); ok false
// when there is none or it covers the client's bound lease (the store has to be
// asked).
func (s *Leases) dropHold(c dhcp.Client, ip netip.Addr, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.liveHold(ip, time.Time{})
	if h == nil || !c.Owns(h.l) {
		return false
	}
	delete(s.holds, ip)
	s.alloc.Forget(ip)
	if h.l.State != resource.LeaseOffered {
		return false
	}
	released := dhcp.CloneLease(h.l)
	released.State, released.ExpiresAt = resource.LeaseReleased, now
	s.alloc.Learn(released)
	return true
}
