package dhcp

import (
	"context"
	"net/netip"
	"slices"
	"sync"
)

// MemoryLeases is a Leases kept in memory only: for tests, benchmarks of the
// protocol path and tools. It runs the same allocation algorithm as the store's
// (dhcpstore.Leases).
type MemoryLeases struct {
	mu    sync.Mutex
	alloc *Allocator
	table memTable
}

// NewMemoryLeases returns an empty MemoryLeases.
func NewMemoryLeases() *MemoryLeases {
	return &MemoryLeases{alloc: NewAllocator(), table: memTable{m: map[netip.Addr]*memRecord{}}}
}

type memRecord struct {
	l       Lease
	version int
}

type memTable struct{ m map[netip.Addr]*memRecord }

// CloneLease returns a copy of l that shares no slice with it.
func CloneLease(l *Lease) *Lease {
	c := *l
	c.MAC = slices.Clone(l.MAC)
	c.ClientID = slices.Clone(l.ClientID)
	return &c
}

func (t memTable) Get(_ context.Context, ip netip.Addr) (*Lease, any, error) {
	r, ok := t.m[ip]
	if !ok {
		return nil, nil, nil
	}
	return CloneLease(&r.l), r.version, nil
}

func (t memTable) Create(_ context.Context, l *Lease) (any, error) {
	if _, ok := t.m[l.IP]; ok {
		return nil, ErrTableExists
	}
	t.m[l.IP] = &memRecord{l: *CloneLease(l), version: 1}
	return 1, nil
}

func (t memTable) Update(_ context.Context, l *Lease, token any) (any, error) {
	r, ok := t.m[l.IP]
	if v, isInt := token.(int); !ok || !isInt || r.version != v {
		return nil, ErrTableConflict
	}
	r.l, r.version = *CloneLease(l), r.version+1
	return r.version, nil
}

// Offer implements Leases.
func (m *MemoryLeases) Offer(ctx context.Context, req OfferRequest) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.Offer(ctx, m.table, req)
}

// Commit implements Leases.
func (m *MemoryLeases) Commit(ctx context.Context, req CommitRequest) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.Commit(ctx, m.table, req)
}

// Release implements Leases.
func (m *MemoryLeases) Release(ctx context.Context, req ReleaseRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.Release(ctx, m.table, req)
}

// Decline implements Leases.
func (m *MemoryLeases) Decline(ctx context.Context, req DeclineRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.Decline(ctx, m.table, req)
}

// Lookup implements Leases.
func (m *MemoryLeases) Lookup(ctx context.Context, subnet string, c Client) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.Lookup(ctx, m.table, subnet, c)
}

// All returns a copy of every lease, for tests.
func (m *MemoryLeases) All() []Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Lease, 0, len(m.table.m))
	for _, r := range m.table.m {
		out = append(out, *CloneLease(&r.l))
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out
}
