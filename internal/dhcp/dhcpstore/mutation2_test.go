package dhcpstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// TestOfferAgainFromHold: a client that DISCOVERs again is offered the address
// held for it, the hold extended, without a store read: while the hold lasts (a
// retransmitted DISCOVER) and after it ended (the allocator wrote the hold, so it
// knows the record under it).
func TestOfferAgainFromHold(t *testing.T) {
	st := &countingStore{Store: testkit.OpenSQLite(t, t.TempDir())}
	sl := NewLeases(st, 0)
	defer sl.Close()
	sn := hammerSubnet(t)
	c := dhcp.Client{MAC: dhcptest.MAC(macA)}
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	first, err := sl.Offer(ctx, dhcp.OfferRequest{Subnet: sn, Client: c, Now: now, Until: now.Add(dhcp.DefaultOfferHold)})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name  string
		after time.Duration // since the previous offer
	}{
		{"retransmitted DISCOVER, hold live", time.Second},
		{"DISCOVER after the hold ended", dhcp.DefaultOfferHold + time.Second},
		{"and again while that hold lasts", 2 * time.Second},
	} {
		now = now.Add(step.after)
		before := st.views.Load()
		l, err := sl.Offer(ctx, dhcp.OfferRequest{Subnet: sn, Client: c, Now: now, Until: now.Add(dhcp.DefaultOfferHold)})
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if l.IP != first.IP || l.State != resource.LeaseOffered || !l.ExpiresAt.Equal(now.Add(dhcp.DefaultOfferHold)) {
			t.Errorf("%s: offered %s %s until %s, want %s offered until %s", step.name, l.IP, l.State, l.ExpiresAt, first.IP, now.Add(dhcp.DefaultOfferHold))
		}
		if n := st.views.Load() - before; n != 0 {
			t.Errorf("%s: %d store reads, want 0 (the allocator wrote the hold)", step.name, n)
		}
	}
}

// TestRestartedLeasesLearnFromStore: a new Leases (a restarted server) learns
// the stored leases on first use: Lookup finds a client's lease, and another
// client is not offered it.
func TestRestartedLeasesLearnFromStore(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	sn := mustSubnet(t, "lab", resource.SubnetSpec{CIDR: "10.0.0.0/24", Pools: []resource.Pool{{Start: "10.0.0.10", End: "10.0.0.11"}},
		UnknownMachines: resource.UnknownAllocate})
	ctx := context.Background()
	first := NewLeases(st, 0)
	req := commitReq(sn, "10.0.0.11", 7)
	if _, err := first.Commit(ctx, req); err != nil {
		t.Fatal(err)
	}
	first.Close()

	restarted := NewLeases(st, 0)
	defer restarted.Close()
	l, err := restarted.Lookup(ctx, sn.Name, req.Client)
	if err != nil || l.IP != req.IP || l.State != resource.LeaseBound {
		t.Fatalf("lookup after restart: %+v %v, want %s bound", l, err, req.IP)
	}
	// An address the hints do not know is assumed free (the offer reads no
	// record): without them, the address this client asks for would be offered.
	other := dhcp.Client{MAC: dhcptest.MAC(macB)}
	now := time.Now()
	off, err := restarted.Offer(ctx, dhcp.OfferRequest{Subnet: sn, Client: other, Requested: req.IP, Now: now, Until: now.Add(time.Minute)})
	if err != nil || off.IP == req.IP {
		t.Fatalf("another client offered %+v %v; %s is bound", off, err, req.IP)
	}
}

// TestLeaseStoredFields: what a commit stores reads back the same: MAC, client
// identifier, hostname, the discovery mark; an operator's labels on the record
// are kept by a renewal, the discovery label follows the lease.
func TestLeaseStoredFields(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	sl := NewLeases(st, 0)
	defer sl.Close()
	sn := hammerSubnet(t)
	ctx := context.Background()
	for i, c := range []struct {
		name      string
		client    dhcp.Client
		hostname  string
		discovery bool
	}{
		{"MAC only", dhcp.Client{MAC: dhcptest.MAC(macA)}, "", false},
		{"client identifier", dhcp.Client{MAC: dhcptest.MAC(macB), ClientID: []byte{0xff, 0, 1, 2, 3}}, "", false},
		{"discovery", dhcp.Client{MAC: dhcptest.MAC("52:54:00:00:00:0c")}, "", true},
		{"hostname and client identifier", dhcp.Client{MAC: dhcptest.MAC("52:54:00:00:00:0d"), ClientID: []byte("id-1")}, "web-9", false},
	} {
		ip := fmt.Sprintf("10.0.0.%d", 30+i)
		req := commitReq(sn, ip, i)
		req.Client, req.Hostname, req.Discovery = c.client, c.hostname, c.discovery
		if _, err := sl.Commit(ctx, req); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := storedLease(t, st, ip)
		if got == nil {
			t.Fatalf("%s: not stored", c.name)
		}
		if got.MAC.String() != c.client.MAC.String() || !slices.Equal(got.ClientID, c.client.ClientID) || got.Hostname != c.hostname ||
			got.Discovery != c.discovery || got.State != resource.LeaseBound || !got.ExpiresAt.Equal(req.Until) {
			t.Errorf("%s: stored %+v, want MAC %s client ID %x hostname %q discovery %v", c.name, got, c.client.MAC, c.client.ClientID, c.hostname, c.discovery)
		}
		l, err := sl.Lookup(ctx, sn.Name, c.client)
		if err != nil || l.Discovery != c.discovery || !slices.Equal(l.ClientID, c.client.ClientID) {
			t.Errorf("%s: lookup %+v %v", c.name, l, err)
		}
	}

	// A record an operator labelled, then renewed by its client.
	const ip = "10.0.0.60"
	req := commitReq(sn, ip, 60)
	obj, err := leaseObject(&dhcp.Lease{IP: req.IP, Subnet: sn.Name, MAC: req.Client.MAC, State: resource.LeaseBound, ExpiresAt: req.Now.Add(time.Minute), Discovery: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj.Metadata.Labels["team"] = "infra"
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.Create(ctx, obj) }); err != nil {
		t.Fatal(err)
	}
	sl.Resync()
	if _, err := sl.Commit(ctx, req); err != nil {
		t.Fatal(err)
	}
	var labels map[string]string
	if err := st.View(ctx, func(tx store.Tx) error {
		o, err := tx.Get(ctx, LeaseKind, ip)
		if err == nil {
			labels = o.Metadata.Labels
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if labels["team"] != "infra" || labels[LabelDiscovery] != "" {
		t.Errorf("labels after the renewal %v, want team=infra kept and no %s (the renewal is not a discovery)", labels, LabelDiscovery)
	}
	if l := storedLease(t, st, ip); l == nil || !l.ExpiresAt.Equal(req.Until) || l.Discovery {
		t.Errorf("renewed lease %+v", l)
	}
}

// flakyViewStore fails the next `fail` read transactions before they start, as
// a database that is away for a moment does.
type flakyViewStore struct {
	countingStore
	fail atomic.Int32
}

func (f *flakyViewStore) View(ctx context.Context, fn func(store.Tx) error) error {
	if f.fail.Add(-1) >= 0 {
		return errors.New("connection reset")
	}
	return f.countingStore.View(ctx, fn)
}

// TestMachineLookupRetriedAlone: a lookup whose shared read transaction failed
// before reaching it gets one of its own; it is never answered "no machine, no
// error". When that fails too, the caller gets the error.
func TestMachineLookupRetriedAlone(t *testing.T) {
	inner := testkit.OpenSQLite(t, t.TempDir())
	createObject(t, inner, "Machine", "web-1", resource.MachineSpec{Interfaces: []resource.Interface{{MAC: macM, IP: "10.0.0.20"}}})
	for _, c := range []struct {
		fails   int32
		wantErr bool
	}{{1, false}, {2, true}} {
		st := &flakyViewStore{countingStore: countingStore{Store: inner}}
		m := &Machines{Store: st, CacheTTL: -1}
		st.fail.Store(c.fails)
		got, err := m.MachineByMAC(context.Background(), dhcptest.MAC(macM))
		switch {
		case c.wantErr && (err == nil || errors.Is(err, dhcp.ErrUnknownMachine)):
			t.Errorf("%d failed reads: %+v %v, want the store's error", c.fails, got, err)
		case !c.wantErr && (err != nil || got == nil || got.Name != "web-1"):
			t.Errorf("%d failed read: %+v %v, want web-1", c.fails, got, err)
		}
	}
}

// TestMachineCacheKeepsFoundMachines: found machines are cached as unknown ones
// are, several at once: looking two machines up again within CacheTTL reads
// nothing. A full cache is emptied, never grown past maxMachineCache.
func TestMachineCacheKeepsFoundMachines(t *testing.T) {
	inner := testkit.OpenSQLite(t, t.TempDir())
	createObject(t, inner, "Machine", "web-1", resource.MachineSpec{Interfaces: []resource.Interface{{MAC: macM, IP: "10.0.0.20"}}})
	createObject(t, inner, "Machine", "db-1", resource.MachineSpec{Interfaces: []resource.Interface{{MAC: macB}}})
	st := &countingStore{Store: inner}
	m := &Machines{Store: st, CacheTTL: time.Hour, MACIndexTTL: -1}
	ctx := context.Background()
	lookupAll := func() int64 {
		t.Helper()
		before := st.views.Load()
		for mac, name := range map[string]string{macM: "web-1", macB: "db-1"} {
			if got, err := m.MachineByMAC(ctx, dhcptest.MAC(mac)); err != nil || got.Name != name {
				t.Fatalf("%s: %+v %v, want %s", mac, got, err, name)
			}
		}
		return st.views.Load() - before
	}
	if n := lookupAll(); n == 0 {
		t.Fatal("the first lookups read nothing")
	}
	if n := lookupAll(); n != 0 {
		t.Errorf("looking the machines up again within CacheTTL: %d store reads, want 0", n)
	}

	m.cmu.Lock()
	m.cache = make(map[string]machineEntry, maxMachineCache)
	for i := range maxMachineCache {
		m.cache[fmt.Sprint(i)] = machineEntry{exp: time.Now().Add(time.Hour)}
	}
	m.cmu.Unlock()
	if got, err := m.MachineByMAC(ctx, dhcptest.MAC(macM)); err != nil || got.Name != "web-1" {
		t.Fatalf("%+v %v", got, err)
	}
	m.cmu.Lock()
	n := len(m.cache)
	m.cmu.Unlock()
	if n != 1 {
		t.Errorf("a lookup into a full cache (%d entries) left %d entries, want 1 (emptied, then the new one)", maxMachineCache, n)
	}
}

// TestMACIndexByDefault: with MACIndexTTL unset the index is used: once it is
// loaded, an unknown MAC costs no store read.
func TestMACIndexByDefault(t *testing.T) {
	st := &countingStore{Store: testkit.OpenSQLite(t, t.TempDir())}
	m := &Machines{Store: st}
	ctx := context.Background()
	if _, err := m.MachineByMAC(ctx, dhcptest.MAC("52:54:00:00:0a:01")); !errors.Is(err, dhcp.ErrUnknownMachine) {
		t.Fatalf("unknown MAC: %v", err)
	}
	waitIndexed(t, m)
	before := st.views.Load()
	if _, err := m.MachineByMAC(ctx, dhcptest.MAC("52:54:00:00:0a:02")); !errors.Is(err, dhcp.ErrUnknownMachine) {
		t.Fatalf("unknown MAC: %v", err)
	}
	if n := st.views.Load() - before; n != 0 {
		t.Errorf("an unknown MAC with a loaded index cost %d store reads, want 0", n)
	}
}

// TestMACIndexTrustedForLessThanTTL: the index answers until TTL after the
// version was read, not at TTL.
func TestMACIndexTrustedForLessThanTTL(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	x := &macIndex{st: st, ttl: time.Minute}
	mac := dhcptest.MAC(macA)
	if _, ok := x.known(mac, time.Now()); ok {
		t.Fatal("an index never loaded answered")
	}
	deadline := time.Now().Add(5 * time.Second)
	for x.cur.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the index never loaded")
		}
		time.Sleep(time.Millisecond)
	}
	checked := x.cur.Load().checked
	for _, c := range []struct {
		at      time.Duration // after the version was read
		current bool
	}{{0, true}, {time.Minute - time.Nanosecond, true}, {time.Minute, false}} {
		if _, ok := x.known(mac, checked.Add(c.at)); ok != c.current {
			t.Errorf("%v after the read: current %v, want %v", c.at, ok, c.current)
		}
	}
}

// TestReservationIndexReused: the reserved-address index is read once per
// ReservationTTL (default 30 s), not per question.
func TestReservationIndexReused(t *testing.T) {
	inner := testkit.OpenSQLite(t, t.TempDir())
	createObject(t, inner, "Machine", "web-1", resource.MachineSpec{Interfaces: []resource.Interface{{MAC: macM, IP: "10.0.0.20"}}})
	st := &countingStore{Store: inner}
	m := &Machines{Store: st}
	ctx := context.Background()
	for i, c := range []struct {
		ip, owner string
	}{{"10.0.0.20", "web-1"}, {"10.0.0.21", ""}, {"10.0.0.20", "web-1"}} {
		before := st.views.Load()
		owner, err := m.ReservedBy(ctx, netip.MustParseAddr(c.ip))
		if err != nil || owner != c.owner {
			t.Errorf("%s reserved by %q %v, want %q", c.ip, owner, err, c.owner)
		}
		want := int64(0)
		if i == 0 {
			want = 1
		}
		if n := st.views.Load() - before; n != want {
			t.Errorf("question %d (%s): %d store reads, want %d", i, c.ip, n, want)
		}
	}
}

// TestSubnetsCached: the subnets are read once per TTL; TTL 0 or negative means
// 5 seconds.
func TestSubnetsCached(t *testing.T) {
	inner := testkit.OpenSQLite(t, t.TempDir())
	createObject(t, inner, "Subnet", "lab", dhcptest.LabSubnet())
	for _, c := range []struct {
		ttl   time.Duration
		reads int64 // for two calls in a row
	}{{0, 1}, {-time.Second, 1}, {time.Hour, 1}, {time.Nanosecond, 2}} {
		st := &countingStore{Store: inner}
		ss := &Subnets{Store: st, TTL: c.ttl}
		for range 2 {
			if got, err := ss.Subnets(context.Background()); err != nil || len(got) != 1 || got[0].Name != "lab" {
				t.Fatalf("TTL %v: %v %v", c.ttl, got, err)
			}
		}
		if n := st.views.Load(); n != c.reads {
			t.Errorf("TTL %v: two calls read the store %d times, want %d", c.ttl, n, c.reads)
		}
	}
}
