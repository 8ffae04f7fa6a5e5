package dhcp

import (
	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"

	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

var errDiskOnFire = errors.New("disk on fire")

// countingTable is the memory table with its calls counted and the next call of
// one method failing with a store error on request.
type countingTable struct {
	memTable
	gets, creates, updates int
	fail                   string // "get", "create" or "update": fail that call once
}

func (t *countingTable) failing(method string) bool {
	if t.fail == method {
		t.fail = ""
		return true
	}
	return false
}

func (t *countingTable) Get(ctx context.Context, ip netip.Addr) (*Lease, any, error) {
	t.gets++
	if t.failing("get") {
		return nil, nil, errDiskOnFire
	}
	return t.memTable.Get(ctx, ip)
}

func (t *countingTable) Create(ctx context.Context, l *Lease) (any, error) {
	t.creates++
	if t.failing("create") {
		return nil, errDiskOnFire
	}
	return t.memTable.Create(ctx, l)
}

func (t *countingTable) Update(ctx context.Context, l *Lease, token any) (any, error) {
	t.updates++
	if t.failing("update") {
		return nil, errDiskOnFire
	}
	return t.memTable.Update(ctx, l, token)
}

func client(last byte) Client { return Client{MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, last}} }

// allocatorFixture is an allocator on a counting table over a three-address pool
// (10.0.0.100-102).
type allocatorFixture struct {
	a   *Allocator
	t   *countingTable
	sn  *Subnet
	now time.Time
}

func newAllocatorFixture(t *testing.T) *allocatorFixture {
	spec := dhcptest.LabSubnet()
	spec.Pools = []resource.Pool{{Start: "10.0.0.100", End: "10.0.0.102"}}
	return &allocatorFixture{
		a:   NewAllocator(),
		t:   &countingTable{memTable: memTable{m: map[netip.Addr]*memRecord{}}},
		sn:  mustSubnet(t, "lab", spec),
		now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
	}
}

func (f *allocatorFixture) offer(c Client, hostname string) (*Lease, error) {
	return f.a.Offer(context.Background(), f.t, OfferRequest{Subnet: f.sn, Client: c, Hostname: hostname, Now: f.now, Until: f.now.Add(time.Minute)})
}

func (f *allocatorFixture) commit(c Client, ip, hostname string) (*Lease, error) {
	return f.a.Commit(context.Background(), f.t, CommitRequest{Subnet: f.sn, Client: c, IP: netip.MustParseAddr(ip), Hostname: hostname, Now: f.now, Until: f.now.Add(time.Hour)})
}

// put stores a lease directly, as another server would, and lets the allocator
// learn it, as a resync would.
func (f *allocatorFixture) put(ip string, c Client, state string, expires time.Time) {
	l := &Lease{IP: netip.MustParseAddr(ip), Subnet: f.sn.Name, MAC: c.MAC, State: state, ExpiresAt: expires}
	f.t.m[l.IP] = &memRecord{l: *CloneLease(l), version: 1}
	f.a.Learn(l)
}

func (f *allocatorFixture) stored(ip string) *Lease {
	l, _, _ := f.t.memTable.Get(context.Background(), netip.MustParseAddr(ip))
	return l
}

// TestAllocatorStoreErrors: a store error of the table is the operation's error,
// with no lease: the server must not answer for a lease that was not written.
func TestAllocatorStoreErrors(t *testing.T) {
	a, b := client(0xa), client(0xb)
	cases := []struct {
		name  string
		setup func(f *allocatorFixture)
		fail  string
		op    func(f *allocatorFixture) (*Lease, error)
	}{
		{"offer of a free address: create fails", nil, "create",
			func(f *allocatorFixture) (*Lease, error) { return f.offer(a, "") }},
		{"commit of a free address: create fails", nil, "create",
			func(f *allocatorFixture) (*Lease, error) { return f.commit(a, "10.0.0.100", "") }},
		{"commit of the offered address: update fails", func(f *allocatorFixture) { _, _ = f.offer(a, "") }, "update",
			func(f *allocatorFixture) (*Lease, error) { return f.commit(a, "10.0.0.100", "") }},
		{"commit taking over an expired lease: update fails", func(f *allocatorFixture) {
			f.put("10.0.0.100", b, resource.LeaseBound, f.now.Add(-time.Minute))
		}, "update",
			func(f *allocatorFixture) (*Lease, error) { return f.commit(a, "10.0.0.100", "") }},
		{"release: the read fails", func(f *allocatorFixture) { _, _ = f.commit(a, "10.0.0.100", "") }, "get",
			func(f *allocatorFixture) (*Lease, error) {
				return nil, f.a.Release(context.Background(), f.t, ReleaseRequest{Subnet: f.sn, Client: a, IP: netip.MustParseAddr("10.0.0.100"), Now: f.now})
			}},
		{"release: the update fails", func(f *allocatorFixture) { _, _ = f.commit(a, "10.0.0.100", "") }, "update",
			func(f *allocatorFixture) (*Lease, error) {
				return nil, f.a.Release(context.Background(), f.t, ReleaseRequest{Subnet: f.sn, Client: a, IP: netip.MustParseAddr("10.0.0.100"), Now: f.now})
			}},
		{"decline: the update fails", func(f *allocatorFixture) { _, _ = f.commit(a, "10.0.0.100", "") }, "update",
			func(f *allocatorFixture) (*Lease, error) {
				return nil, f.a.Decline(context.Background(), f.t, DeclineRequest{Subnet: f.sn, Client: a, IP: netip.MustParseAddr("10.0.0.100"), Now: f.now, Until: f.now.Add(time.Hour)})
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newAllocatorFixture(t)
			if c.setup != nil {
				c.setup(f)
			}
			before := f.stored("10.0.0.100")
			f.t.fail = c.fail
			l, err := c.op(f)
			if !errors.Is(err, errDiskOnFire) || l != nil {
				t.Errorf("lease %+v, err %v; want no lease and the store's error", l, err)
			}
			if after := f.stored("10.0.0.100"); (before == nil) != (after == nil) || (after != nil && (after.State != before.State || !after.ExpiresAt.Equal(before.ExpiresAt))) {
				t.Errorf("record changed by a failed operation: %+v -> %+v", before, after)
			}
		})
	}
}

// TestAllocatorDecisions: what the allocator writes and how many records it reads
// for the common exchanges (it reads nothing it knows: its own writes and
// addresses it has no hint for), and which address it picks in a pool whose
// other addresses are taken, expired or released.
func TestAllocatorDecisions(t *testing.T) {
	a, b, c := client(0xa), client(0xb), client(0xc)
	f := newAllocatorFixture(t)

	// A DISCOVER: a free address is created as offered, without a read.
	l, err := f.offer(a, "host-a")
	if err != nil || l.IP.String() != "10.0.0.100" || l.State != resource.LeaseOffered || l.Hostname != "host-a" {
		t.Fatalf("offer: %+v %v", l, err)
	}
	if f.t.gets != 0 || f.t.creates != 1 {
		t.Errorf("offer of a free address: %d reads %d creates, want 0 and 1", f.t.gets, f.t.creates)
	}
	// The same DISCOVER again: nothing changes, nothing is written.
	if l, err := f.offer(a, "host-a"); err != nil || l.IP.String() != "10.0.0.100" {
		t.Fatalf("second offer: %+v %v", l, err)
	}
	if f.t.updates != 0 || f.t.creates != 1 {
		t.Errorf("repeated offer wrote: %d creates %d updates, want 1 and 0", f.t.creates, f.t.updates)
	}
	// The REQUEST: bound for an hour, the hostname kept when not sent again, the
	// record updated without a read.
	gets := f.t.gets
	l, err = f.commit(a, "10.0.0.100", "")
	if err != nil || l.State != resource.LeaseBound || !l.ExpiresAt.Equal(f.now.Add(time.Hour)) || l.Hostname != "host-a" {
		t.Fatalf("commit: %+v %v", l, err)
	}
	if s := f.stored("10.0.0.100"); s.State != resource.LeaseBound || s.Hostname != "host-a" {
		t.Errorf("stored after commit: %+v", s)
	}
	if f.t.gets != gets || f.t.updates != 1 {
		t.Errorf("commit after the allocator's own offer: %d reads %d updates, want 0 and 1", f.t.gets-gets, f.t.updates)
	}
	if l, err := f.commit(a, "10.0.0.100", "host-a2"); err != nil || l.Hostname != "host-a2" {
		t.Errorf("commit with a new hostname: %+v %v", l, err)
	}

	// Another client: .100 is a's, .101 was released by c, .102 never used: the
	// never-used address goes first, the released one next, then none.
	f.put("10.0.0.101", c, resource.LeaseReleased, f.now.Add(time.Hour))
	if l, err := f.offer(b, ""); err != nil || l.IP.String() != "10.0.0.102" {
		t.Fatalf("offer to b: %+v %v, want 10.0.0.102 (never used) first", l, err)
	}
	if _, err := f.commit(b, "10.0.0.102", ""); err != nil {
		t.Fatal(err)
	}
	d := client(0xd)
	if l, err := f.offer(d, ""); err != nil || l.IP.String() != "10.0.0.101" || l.State != resource.LeaseOffered {
		t.Fatalf("offer to d: %+v %v, want the released 10.0.0.101, offered", l, err)
	}
	e := client(0xe)
	if l, err := f.offer(e, ""); !errors.Is(err, ErrNoAddress) {
		t.Errorf("offer to e in a full pool: %+v %v, want ErrNoAddress", l, err)
	}

	// An expired lease of another client is taken over by a commit, bound.
	g := newAllocatorFixture(t)
	g.put("10.0.0.100", b, resource.LeaseBound, g.now.Add(time.Hour))
	g.put("10.0.0.101", c, resource.LeaseBound, g.now.Add(time.Hour))
	g.put("10.0.0.102", d, resource.LeaseBound, g.now.Add(-time.Second))
	if l, err := g.offer(a, ""); err != nil || l.IP.String() != "10.0.0.102" || l.State != resource.LeaseOffered {
		t.Fatalf("offer with only an expired lease free: %+v %v, want 10.0.0.102 offered", l, err)
	}
	if l, err := g.commit(a, "10.0.0.102", ""); err != nil || l.State != resource.LeaseBound || string(l.MAC) != string(a.MAC) {
		t.Fatalf("commit taking over: %+v %v", l, err)
	}
	if l, err := g.commit(e, "10.0.0.100", ""); !errors.Is(err, ErrAddressTaken) {
		t.Errorf("commit of b's bound lease by e: %+v %v, want ErrAddressTaken", l, err)
	}
}
