package dhcp

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// LeaseKind is the store kind of leases; an object's name is its IP address.
const LeaseKind = "Lease"

// LabelDiscovery marks the Lease of an unknown machine under the discovery
// policy ("true"): the boot side looks the client's address up and serves it the
// subnet's discovery profile.
const LabelDiscovery = "kiln.dev/discovery"

// StoreLeases implements Leases on Kiln's store, one Lease object per address.
//
// Every operation is one store transaction. An address is taken by creating its
// Lease object (the name is the IP, so the store's uniqueness refuses a second
// one: store.ErrExists means another server holds it) or by updating an expired
// one at the resourceVersion read (store.ErrConflict means another server won;
// the operation is retried). So two Kiln servers sharing one PostgreSQL database
// never lease an address twice. The database is the authority; the in-memory
// hints (who holds what, a per-subnet cursor) only choose which few records an
// allocation reads, and are rebuilt from the store every Resync.
type StoreLeases struct {
	st     store.Store
	resync time.Duration

	mu       sync.Mutex // serializes operations of this process; held during a transaction
	alloc    *allocator
	lastSync time.Time
}

// DefaultLeaseResync is how often StoreLeases rebuilds its hints from the store.
const DefaultLeaseResync = 5 * time.Minute

// NewStoreLeases returns a StoreLeases on st. resync is how often the hints are
// rebuilt from all Lease objects (0: DefaultLeaseResync); in between they learn
// from the records each operation reads, including those another server wrote.
func NewStoreLeases(st store.Store, resync time.Duration) *StoreLeases {
	return &StoreLeases{st: st, resync: or(resync, DefaultLeaseResync), alloc: newAllocator()}
}

// maxAttempts bounds the retries of an operation that lost a race to another server.
const maxAttempts = 4

func (s *StoreLeases) run(ctx context.Context, fn func(t leaseTable) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncLocked(ctx)
	var err error
	for range maxAttempts {
		err = s.st.Update(ctx, func(tx store.Tx) error { return fn(txTable{tx}) })
		if !errors.Is(err, errTableConflict) && !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("dhcp: lease store: gave up after %d conflicting attempts: %w", maxAttempts, err)
}

// syncLocked rebuilds the hints when they are older than the resync period. A
// failure leaves the old hints: they are only hints.
func (s *StoreLeases) syncLocked(ctx context.Context) {
	now := time.Now()
	if !s.lastSync.IsZero() && now.Sub(s.lastSync) < s.resync {
		return
	}
	s.lastSync = now
	var leases []*Lease
	err := s.st.View(ctx, func(tx store.Tx) error {
		leases = leases[:0]
		cont := ""
		for {
			objs, next, err := tx.List(ctx, LeaseKind, store.ListOptions{Limit: 1000, Continue: cont})
			if err != nil {
				return err
			}
			for _, o := range objs {
				if l, err := leaseFromObject(o); err == nil {
					leases = append(leases, l)
				}
			}
			if next == "" {
				return nil
			}
			cont = next
		}
	})
	if err != nil {
		return
	}
	s.alloc.reset()
	for _, l := range leases {
		s.alloc.learn(l)
	}
}

// Resync makes the next operation rebuild the hints from the store.
func (s *StoreLeases) Resync() {
	s.mu.Lock()
	s.lastSync = time.Time{}
	s.mu.Unlock()
}

// Offer implements Leases.
func (s *StoreLeases) Offer(ctx context.Context, req OfferRequest) (l *Lease, err error) {
	err = s.run(ctx, func(t leaseTable) error {
		l, err = s.alloc.offer(ctx, t, req)
		return err
	})
	return l, err
}

// Commit implements Leases.
func (s *StoreLeases) Commit(ctx context.Context, req CommitRequest) (l *Lease, err error) {
	err = s.run(ctx, func(t leaseTable) error {
		l, err = s.alloc.commit(ctx, t, req)
		return err
	})
	return l, err
}

// Release implements Leases.
func (s *StoreLeases) Release(ctx context.Context, req ReleaseRequest) error {
	return s.run(ctx, func(t leaseTable) error { return s.alloc.release(ctx, t, req) })
}

// Decline implements Leases.
func (s *StoreLeases) Decline(ctx context.Context, req DeclineRequest) error {
	return s.run(ctx, func(t leaseTable) error { return s.alloc.decline(ctx, t, req) })
}

// Lookup implements Leases. It reads, so it runs in a read-only transaction.
func (s *StoreLeases) Lookup(ctx context.Context, subnet string, c Client) (l *Lease, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncLocked(ctx)
	err = s.st.View(ctx, func(tx store.Tx) error {
		l, err = s.alloc.lookup(ctx, txTable{tx}, subnet, c)
		return err
	})
	return l, err
}

// txTable is a leaseTable on a store transaction.
type txTable struct{ tx store.Tx }

func (t txTable) get(ctx context.Context, ip netip.Addr) (*Lease, any, error) {
	obj, err := t.tx.Get(ctx, LeaseKind, ip.String())
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	l, err := leaseFromObject(obj)
	if err != nil || l.IP != ip {
		// A record Kiln cannot read is left alone: the address counts as held until
		// an operator fixes or deletes the object.
		return &Lease{IP: ip, State: "unreadable", ExpiresAt: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, obj, nil
	}
	return l, obj, nil
}

func (t txTable) create(ctx context.Context, l *Lease) error {
	obj, err := leaseObject(l, nil)
	if err != nil {
		return err
	}
	if err := t.tx.Create(ctx, obj); err != nil {
		if errors.Is(err, store.ErrExists) {
			return errTableExists
		}
		return err
	}
	return nil
}

func (t txTable) update(ctx context.Context, l *Lease, token any) error {
	old, _ := token.(*resource.Object)
	if old == nil {
		return errTableConflict
	}
	obj, err := leaseObject(l, old)
	if err != nil {
		return err
	}
	if err := t.tx.Update(ctx, obj); err != nil {
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			return errTableConflict
		}
		return err
	}
	return nil
}

// leaseObject encodes a lease as a Lease object; old (if not nil) is the stored
// object it replaces, whose other labels, status and resourceVersion are kept.
func leaseObject(l *Lease, old *resource.Object) (*resource.Object, error) {
	exp := l.ExpiresAt.UTC()
	spec := resource.LeaseSpec{
		IP: l.IP.String(), Subnet: l.Subnet, Hostname: l.Hostname, State: l.State, ExpiresAt: &exp,
	}
	if len(l.MAC) > 0 {
		spec.MAC = l.MAC.String()
	}
	if len(l.ClientID) > 0 {
		spec.ClientID = hex.EncodeToString(l.ClientID)
	}
	raw, err := json.Marshal(&spec)
	if err != nil {
		return nil, fmt.Errorf("encode lease %s: %w", l.IP, err)
	}
	obj := &resource.Object{APIVersion: resource.APIVersion, Kind: LeaseKind, Metadata: resource.Metadata{Name: l.IP.String()}, Spec: raw}
	if old != nil {
		obj.Metadata.ResourceVersion = old.Metadata.ResourceVersion
		obj.Status = old.Status
		for k, v := range old.Metadata.Labels {
			if obj.Metadata.Labels == nil {
				obj.Metadata.Labels = map[string]string{}
			}
			obj.Metadata.Labels[k] = v
		}
	}
	if l.Discovery {
		if obj.Metadata.Labels == nil {
			obj.Metadata.Labels = map[string]string{}
		}
		obj.Metadata.Labels[LabelDiscovery] = "true"
	} else {
		delete(obj.Metadata.Labels, LabelDiscovery)
	}
	return obj, nil
}

// leaseFromObject decodes a Lease object.
func leaseFromObject(o *resource.Object) (*Lease, error) {
	spec, err := resource.Typed[resource.LeaseSpec](o)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(spec.IP)
	if err != nil {
		return nil, fmt.Errorf("lease %s: spec.ip: %w", o.Metadata.Name, err)
	}
	l := &Lease{IP: ip, Subnet: spec.Subnet, Hostname: spec.Hostname, State: spec.State,
		Discovery: o.Metadata.Labels[LabelDiscovery] == "true"}
	if spec.MAC != "" {
		if l.MAC, err = net.ParseMAC(spec.MAC); err != nil {
			return nil, fmt.Errorf("lease %s: spec.mac: %w", o.Metadata.Name, err)
		}
	}
	if spec.ClientID != "" {
		if l.ClientID, err = hex.DecodeString(spec.ClientID); err != nil {
			return nil, fmt.Errorf("lease %s: spec.clientID: %w", o.Metadata.Name, err)
		}
	}
	if spec.ExpiresAt != nil {
		l.ExpiresAt = *spec.ExpiresAt
	}
	return l, nil
}

// ---- machines ---------------------------------------------------------------------

// StoreMachines implements Machines and Reservations on Kiln's store: a machine
// is found by MAC through the store's unique-key index ("mac:..."); the reserved
// addresses are an index rebuilt from all machines at most every ReservationTTL.
type StoreMachines struct {
	Store store.Store
	// ReservationTTL is how long the reserved-address index is reused; 0: 30 s.
	ReservationTTL time.Duration

	mu         sync.Mutex
	reserved   map[netip.Addr]string
	reservedAt time.Time
}

// MachineByMAC implements Machines.
func (m *StoreMachines) MachineByMAC(ctx context.Context, mac net.HardwareAddr) (*Machine, error) {
	var obj *resource.Object
	err := m.Store.View(ctx, func(tx store.Tx) error {
		var err error
		obj, err = tx.LookupKey(ctx, "Machine", "mac:"+mac.String())
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnknownMachine
	}
	if err != nil {
		return nil, fmt.Errorf("dhcp: look up machine by MAC %s: %w", mac, err)
	}
	spec, err := resource.Typed[resource.MachineSpec](obj)
	if err != nil {
		return nil, fmt.Errorf("dhcp: machine %q: %w", obj.Metadata.Name, err)
	}
	out := &Machine{Name: obj.Metadata.Name}
	for _, ifc := range spec.Interfaces {
		if n, err := resource.NormalizeMAC(ifc.MAC); err != nil || n != mac.String() {
			continue
		}
		if a, err := netip.ParseAddr(ifc.IP); err == nil && a.Is4() {
			out.IP = a
		}
		out.Hostname = ifc.Hostname
		break
	}
	return out, nil
}

// ReservedBy implements Reservations.
func (m *StoreMachines) ReservedBy(ctx context.Context, ip netip.Addr) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reserved == nil || time.Since(m.reservedAt) >= or(m.ReservationTTL, 30*time.Second) {
		idx := map[netip.Addr]string{}
		err := m.Store.View(ctx, func(tx store.Tx) error {
			cont := ""
			for {
				objs, next, err := tx.List(ctx, "Machine", store.ListOptions{Limit: 1000, Continue: cont})
				if err != nil {
					return err
				}
				for _, o := range objs {
					spec, err := resource.Typed[resource.MachineSpec](o)
					if err != nil {
						continue
					}
					for _, ifc := range spec.Interfaces {
						if a, err := netip.ParseAddr(ifc.IP); err == nil && a.Is4() {
							idx[a] = o.Metadata.Name
						}
					}
				}
				if next == "" {
					return nil
				}
				cont = next
			}
		})
		if err != nil {
			if m.reserved == nil {
				return "", fmt.Errorf("dhcp: index reserved addresses: %w", err)
			}
		} else {
			m.reserved = idx
		}
		m.reservedAt = time.Now()
	}
	return m.reserved[ip], nil
}
