package dhcpstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Machines implements dhcp.Machines and dhcp.Reservations on Kiln's store: a machine
// is found by MAC through the store's unique-key index ("mac:..."); the reserved
// addresses are an index rebuilt from all machines at most every ReservationTTL.
// A lookup's answer (found or unknown) is reused for CacheTTL: a client's DISCOVER
// and REQUEST, and its retransmissions, cost one store read.
type Machines struct {
	Store store.Store
	// ReservationTTL is how long the reserved-address index is reused; 0: 30 s.
	ReservationTTL time.Duration
	// CacheTTL is how long a MAC lookup is reused; 0: DefaultMachineCacheTTL,
	// negative: not at all (and no MAC index either).
	CacheTTL time.Duration
	// MACIndexTTL bounds how stale the in-memory set of known MACs may be (changes
	// by other replicas; this process's own are seen at once); 0:
	// DefaultMACIndexTTL, negative: no index (every unknown MAC is a store read).
	MACIndexTTL time.Duration

	macsOnce sync.Once
	macs     *macIndex

	mu         sync.Mutex
	reserved   map[netip.Addr]string
	reservedAt time.Time

	cmu   sync.Mutex
	cache map[string]machineEntry

	// Lookups that miss the cache at the same time share one read transaction.
	lmu     sync.Mutex
	pending []*machineLookup
	looking bool
}

// machineLookup is one MAC waiting for a shared read.
type machineLookup struct {
	mac  net.HardwareAddr
	m    *dhcp.Machine
	err  error
	done chan struct{}
}

// DefaultMachineCacheTTL is how long Machines reuses a MAC lookup: a machine
// applied (or changed) meanwhile is seen by DHCP within that time.
const DefaultMachineCacheTTL = 2 * time.Second

// maxMachineCache bounds the cached lookups; the cache is emptied when full.
const maxMachineCache = 1 << 16

type machineEntry struct {
	m   *dhcp.Machine // nil: unknown
	exp time.Time
}

// MachineByMAC implements dhcp.Machines.
func (m *Machines) MachineByMAC(ctx context.Context, mac net.HardwareAddr) (*dhcp.Machine, error) {
	ttl := cmp.Or(m.CacheTTL, DefaultMachineCacheTTL)
	key := string(mac)
	now := time.Now()
	if ttl > 0 && m.MACIndexTTL >= 0 {
		m.macsOnce.Do(func() { m.macs = &macIndex{st: m.Store, ttl: cmp.Or(m.MACIndexTTL, DefaultMACIndexTTL)} })
		if known, ok := m.macs.known(mac, now); ok && !known {
			return nil, dhcp.ErrUnknownMachine
		}
	}
	if ttl > 0 {
		m.cmu.Lock()
		e, ok := m.cache[key]
		m.cmu.Unlock()
		if ok && now.Before(e.exp) {
			if e.m == nil {
				return nil, dhcp.ErrUnknownMachine
			}
			c := *e.m
			return &c, nil
		}
	}
	out, err := m.lookupShared(ctx, mac)
	if ttl > 0 && (err == nil || errors.Is(err, dhcp.ErrUnknownMachine)) {
		m.cmu.Lock()
		if m.cache == nil || len(m.cache) >= maxMachineCache {
			m.cache = make(map[string]machineEntry)
		}
		e := machineEntry{exp: now.Add(ttl)}
		if out != nil {
			c := *out
			e.m = &c
		}
		m.cache[key] = e
		m.cmu.Unlock()
	}
	return out, err
}

// lookupShared reads a MAC's machine in a read transaction shared with the
// lookups waiting at the same time (a burst of DISCOVERs from a rack costs one
// transaction, not one each).
func (m *Machines) lookupShared(ctx context.Context, mac net.HardwareAddr) (*dhcp.Machine, error) {
	req := &machineLookup{mac: mac, done: make(chan struct{})}
	m.lmu.Lock()
	m.pending = append(m.pending, req)
	if !m.looking {
		m.looking = true
		go m.lookupLoop()
	}
	m.lmu.Unlock()
	select {
	case <-req.done:
		return req.m, req.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// lookupLoop answers pending lookups, a read transaction per batch, until none
// are left.
func (m *Machines) lookupLoop() {
	for {
		runtime.Gosched() // let the lookups that are about to start join this batch
		m.lmu.Lock()
		batch := m.pending
		m.pending = nil
		if len(batch) == 0 {
			m.looking = false
			m.lmu.Unlock()
			return
		}
		m.lmu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := m.Store.View(ctx, func(tx store.Tx) error {
			for _, r := range batch {
				r.m, r.err = m.lookup(ctx, tx, r.mac)
				if r.err != nil && !errors.Is(r.err, dhcp.ErrUnknownMachine) {
					return r.err // the transaction may be unusable now
				}
			}
			return nil
		})
		if err != nil {
			// One lookup failed the transaction: the others get their own.
			for _, r := range batch {
				if r.err == nil && r.m != nil || errors.Is(r.err, dhcp.ErrUnknownMachine) {
					continue
				}
				verr := m.Store.View(ctx, func(tx store.Tx) error {
					r.m, r.err = m.lookup(ctx, tx, r.mac)
					return nil
				})
				if verr != nil {
					r.m, r.err = nil, fmt.Errorf("dhcp: look up machine by MAC %s: %w", r.mac, verr)
				}
			}
		}
		cancel()
		for _, r := range batch {
			close(r.done)
		}
	}
}

// lookup reads a MAC's machine in tx: ErrUnknownMachine when no machine claims it.
func (m *Machines) lookup(ctx context.Context, tx store.Tx, mac net.HardwareAddr) (*dhcp.Machine, error) {
	obj, err := tx.LookupKey(ctx, "Machine", "mac:"+mac.String())
	if errors.Is(err, store.ErrNotFound) {
		return nil, dhcp.ErrUnknownMachine
	}
	if err != nil {
		return nil, fmt.Errorf("dhcp: look up machine by MAC %s: %w", mac, err)
	}
	spec, err := resource.Typed[resource.MachineSpec](obj)
	if err != nil {
		return nil, fmt.Errorf("dhcp: machine %q: %w", obj.Metadata.Name, err)
	}
	out := &dhcp.Machine{Name: obj.Metadata.Name}
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
	// Read in the same transaction (one read per lookup, cached like the machine):
	// a missing or broken profile only means no UKI, the boot script reports it; a
	// failed read fails the lookup, as the transaction may be unusable.
	if spec.Profile != "" {
		p, err := tx.Get(ctx, "Profile", spec.Profile)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("dhcp: machine %q: read profile %q: %w", obj.Metadata.Name, spec.Profile, err)
		}
		if err == nil {
			if ps, err := resource.Typed[resource.ProfileSpec](p); err == nil {
				out.UKI = ps.Boot.UKI != ""
			}
		}
	}
	return out, nil
}

// ReservedBy implements dhcp.Reservations.
func (m *Machines) ReservedBy(ctx context.Context, ip netip.Addr) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reserved == nil || time.Since(m.reservedAt) >= cmp.Or(m.ReservationTTL, 30*time.Second) {
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
