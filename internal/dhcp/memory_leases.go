package dhcp

import (
	"context"
	"net/netip"
	"slices"
	"sync"
)

// MemoryLeases is a Leases kept in memory only: for tests, benchmarks of the
// protocol path and tools. It runs the same allocation algorithm as StoreLeases.
type MemoryLeases struct {
	mu    sync.Mutex
	alloc *allocator
	table memTable
}

// NewMemoryLeases returns an empty MemoryLeases.
func NewMemoryLeases() *MemoryLeases {
	return &MemoryLeases{alloc: newAllocator(), table: memTable{m: map[netip.Addr]*memRecord{}}}
}

type memRecord struct {
	l       Lease
	version int
}

type memTable struct{ m map[netip.Addr]*memRecord }

func cloneLease(l *Lease) *Lease {
	c := *l
	c.MAC = slices.Clone(l.MAC)
	c.ClientID = slices.Clone(l.ClientID)
	return &c
}

func (t memTable) get(_ context.Context, ip netip.Addr) (*Lease, any, error) {
	r, ok := t.m[ip]
	if !ok {
		return nil, nil, nil
	}
	return cloneLease(&r.l), r.version, nil
}

func (t memTable) create(_ context.Context, l *Lease) (any, error) {
	if _, ok := t.m[l.IP]; ok {
		return nil, errTableExists
	}
	t.m[l.IP] = &memRecord{l: *cloneLease(l), version: 1}
	return 1, nil
}

func (t memTable) update(_ context.Context, l *Lease, token any) (any, error) {
	r, ok := t.m[l.IP]
	if v, isInt := token.(int); !ok || !isInt || r.version != v {
		return nil, errTableConflict
	}
	r.l, r.version = *cloneLease(l), r.version+1
	return r.version, nil
}

// Offer implements Leases.
func (m *MemoryLeases) Offer(ctx context.Context, req OfferRequest) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.offer(ctx, m.table, req)
}

// Commit implements Leases.
func (m *MemoryLeases) Commit(ctx context.Context, req CommitRequest) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.commit(ctx, m.table, req)
}

// Release implements Leases.
func (m *MemoryLeases) Release(ctx context.Context, req ReleaseRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.release(ctx, m.table, req)
}

// Decline implements Leases.
func (m *MemoryLeases) Decline(ctx context.Context, req DeclineRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.decline(ctx, m.table, req)
}

// Lookup implements Leases.
func (m *MemoryLeases) Lookup(ctx context.Context, subnet string, c Client) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.lookup(ctx, m.table, subnet, c)
}

// All returns a copy of every lease, for tests.
func (m *MemoryLeases) All() []Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Lease, 0, len(m.table.m))
	for _, r := range m.table.m {
		out = append(out, *cloneLease(&r.l))
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out
}
