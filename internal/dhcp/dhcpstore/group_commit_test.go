package dhcpstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// commitReq is a REQUEST-style commit of ip for MAC 02:00:00:00:hi:lo.
func commitReq(sn *dhcp.Subnet, ip string, n int) dhcp.CommitRequest {
	hw := net.HardwareAddr{2, 0, 0, 0, byte(n >> 8), byte(n)}
	now := time.Now()
	return dhcp.CommitRequest{Subnet: sn, Client: dhcp.Client{MAC: hw}, IP: netip.MustParseAddr(ip), Now: now, Until: now.Add(time.Hour)}
}

func storedLease(t *testing.T, st store.Store, ip string) *dhcp.Lease {
	t.Helper()
	var l *dhcp.Lease
	err := st.View(context.Background(), func(tx store.Tx) error {
		obj, err := tx.Get(context.Background(), LeaseKind, ip)
		if err != nil {
			return err
		}
		l, err = leaseFromObject(obj)
		return err
	})
	if err != nil {
		t.Errorf("lease %s: %v", ip, err)
	}
	return l
}

// TestGroupCommitConcurrent: many concurrent commits share transactions; each
// caller is answered only once its lease is stored; clients racing for one address
// get exactly one winner while the others' commits in the same batches succeed.
func TestGroupCommitConcurrent(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	sl := NewLeases(st, 0)
	defer sl.Close()
	sn := hammerSubnet(t)
	const distinct, racers = 150, 60
	var wg sync.WaitGroup
	errs := make(chan error, distinct+racers)
	var mu sync.Mutex
	winners := 0
	for i := range distinct + racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip := "10.0.0.250" // the address the racers want
			if i < distinct {
				ip = fmt.Sprintf("10.0.0.%d", 10+i%150)
			}
			req := commitReq(sn, ip, i)
			l, err := sl.Commit(context.Background(), req)
			switch {
			case i >= distinct && errors.Is(err, dhcp.ErrAddressTaken):
				return
			case err != nil:
				errs <- fmt.Errorf("commit %s for client %d: %v", ip, i, err)
				return
			}
			if i >= distinct {
				mu.Lock()
				winners++
				mu.Unlock()
			}
			// Answered means stored: another connection sees it now.
			if got := storedLease(t, st, ip); got == nil || got.State != resource.LeaseBound || got.MAC.String() != l.MAC.String() {
				errs <- fmt.Errorf("commit %s answered but stored %+v", ip, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if winners != 1 {
		t.Errorf("%d clients won 10.0.0.250, want 1", winners)
	}
	batches, ops := sl.batches.Load(), sl.batched.Load()
	t.Logf("%d operations in %d transactions", ops, batches)
	if ops != distinct+racers || batches >= ops {
		t.Errorf("%d operations in %d transactions: no group commit", ops, batches)
	}
}

// failingStore fails the Create of one lease with a store error (not a refusal),
// as a broken row or a lost connection would.
type failingStore struct {
	store.Store
	name string
}

func (f failingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return f.Store.Update(ctx, func(tx store.Tx) error { return fn(failingTx{tx, f.name}) })
}

type failingTx struct {
	store.Tx
	name string
}

func (t failingTx) Create(ctx context.Context, obj *resource.Object) error {
	if obj.Metadata.Name == t.name {
		return errors.New("disk on fire")
	}
	return t.Tx.Create(ctx, obj)
}

func (t failingTx) CreateBatch(ctx context.Context, objs []*resource.Object) ([]bool, error) {
	for _, obj := range objs {
		if obj.Metadata.Name == t.name {
			return nil, errors.New("disk on fire")
		}
	}
	return t.Tx.CreateBatch(ctx, objs)
}

// TestGroupCommitItemErrors: an operation that fails with a store error aborts
// its batch's transaction, the batch is applied again one operation at a time, and
// only that operation fails; refusals (an address held by another client) stay
// with their operation and do not undo the batch.
func TestGroupCommitItemErrors(t *testing.T) {
	inner := testkit.OpenSQLite(t, t.TempDir())
	sl := NewLeases(failingStore{inner, "10.0.0.77"}, 0)
	sl.BatchWindow = 20 * time.Millisecond // gather everything below into few batches
	defer sl.Close()
	sn := hammerSubnet(t)
	if _, err := sl.Commit(context.Background(), commitReq(sn, "10.0.0.50", 999)); err != nil {
		t.Fatal(err)
	}
	type result struct {
		ip  string
		err error
	}
	var wg sync.WaitGroup
	results := make(chan result, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip := fmt.Sprintf("10.0.0.%d", 60+i) // 10.0.0.77 fails in the store
			if i%10 == 9 {
				ip = "10.0.0.50" // held by client 999: refused
			}
			_, err := sl.Commit(context.Background(), commitReq(sn, ip, i))
			results <- result{ip, err}
		}()
	}
	wg.Wait()
	close(results)
	for r := range results {
		switch r.ip {
		case "10.0.0.77":
			if r.err == nil || errors.Is(r.err, dhcp.ErrAddressTaken) {
				t.Errorf("%s: err %v, want the store's error", r.ip, r.err)
			}
		case "10.0.0.50":
			if !errors.Is(r.err, dhcp.ErrAddressTaken) {
				t.Errorf("%s: err %v, want ErrAddressTaken", r.ip, r.err)
			}
		default:
			if r.err != nil {
				t.Errorf("%s: %v (failed with another operation of its batch)", r.ip, r.err)
			} else if l := storedLease(t, inner, r.ip); l == nil || l.State != resource.LeaseBound {
				t.Errorf("%s committed but stored %+v", r.ip, l)
			}
		}
	}
	if l := storedLease(t, inner, "10.0.0.50"); l == nil || l.MAC.String() != "02:00:00:00:03:e7" {
		t.Errorf("10.0.0.50 changed hands: %+v", l)
	}
	if sl.batches.Load() >= sl.batched.Load() {
		t.Errorf("%d operations in %d transactions: no group commit", sl.batched.Load(), sl.batches.Load())
	}
}

// TestGroupCommitShutdown: Close applies what is queued and waits for it; later
// writes fail with ErrLeasesClosed; reads keep working; a caller whose context
// ends is answered at once.
func TestGroupCommitShutdown(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	sl := NewLeases(st, 0)
	sl.BatchWindow = 50 * time.Millisecond
	sn := hammerSubnet(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 30)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = sl.Commit(ctx, commitReq(sn, fmt.Sprintf("10.0.0.%d", 100+i), i))
		}()
	}
	time.Sleep(5 * time.Millisecond) // let them queue (some wait out the window)
	closed := make(chan struct{})
	go func() {
		sl.Close()
		close(closed)
	}()
	wg.Wait()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	for i, err := range errs {
		ip := fmt.Sprintf("10.0.0.%d", 100+i)
		switch {
		case errors.Is(err, ErrLeasesClosed):
			// queued after Close: never applied
			if l := storedLease2(st, ip); l != nil {
				t.Errorf("%s refused but stored", ip)
			}
		case err != nil:
			t.Errorf("%s: %v", ip, err)
		default:
			if l := storedLease(t, st, ip); l == nil {
				t.Errorf("%s committed before Close returned but not stored", ip)
			}
		}
	}
	if _, err := sl.Commit(ctx, commitReq(sn, "10.0.0.200", 200)); !errors.Is(err, ErrLeasesClosed) {
		t.Errorf("commit after Close: %v", err)
	}
	if _, err := sl.Lookup(ctx, sn.Name, dhcp.Client{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0}}); err != nil && !errors.Is(err, dhcp.ErrNoLease) {
		t.Errorf("lookup after Close: %v", err)
	}

	// A caller whose context has ended gets its error, not a wait.
	sl2 := NewLeases(st, 0)
	defer sl2.Close()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := sl2.Commit(cctx, commitReq(sn, "10.0.0.201", 201)); !errors.Is(err, context.Canceled) {
		t.Errorf("commit with a cancelled context: %v", err)
	}
}

func storedLease2(st store.Store, ip string) *dhcp.Lease {
	var l *dhcp.Lease
	_ = st.View(context.Background(), func(tx store.Tx) error {
		obj, err := tx.Get(context.Background(), LeaseKind, ip)
		if err == nil {
			l, _ = leaseFromObject(obj)
		}
		return nil
	})
	return l
}

// TestStoreMachinesCache: lookups are reused for CacheTTL (found or unknown), and
// concurrent misses share reads.
func TestStoreMachinesCache(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	m := &Machines{Store: st, CacheTTL: 200 * time.Millisecond}
	ctx := context.Background()
	if _, err := m.MachineByMAC(ctx, dhcptest.MAC(macM)); !errors.Is(err, dhcp.ErrUnknownMachine) {
		t.Fatalf("unknown MAC: %v", err)
	}
	createObject(t, st, "Machine", "web-1", resource.MachineSpec{Interfaces: []resource.Interface{{MAC: macM, IP: "10.0.0.20"}}})
	if _, err := m.MachineByMAC(ctx, dhcptest.MAC(macM)); !errors.Is(err, dhcp.ErrUnknownMachine) {
		t.Errorf("within the TTL the cached answer is reused: %v", err)
	}
	time.Sleep(250 * time.Millisecond)
	if got, err := m.MachineByMAC(ctx, dhcptest.MAC(macM)); err != nil || got.Name != "web-1" {
		t.Errorf("after the TTL: %+v %v", got, err)
	}
	uncached := &Machines{Store: st, CacheTTL: -1}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hw := macM
			if i%2 == 1 {
				hw = fmt.Sprintf("52:54:00:00:09:%02x", i)
			}
			got, err := uncached.MachineByMAC(ctx, dhcptest.MAC(hw))
			if i%2 == 0 && (err != nil || got.Name != "web-1" || got.IP != netip.MustParseAddr("10.0.0.20")) {
				t.Errorf("%s: %+v %v", hw, got, err)
			}
			if i%2 == 1 && !errors.Is(err, dhcp.ErrUnknownMachine) {
				t.Errorf("%s: %+v %v", hw, got, err)
			}
		}()
	}
	wg.Wait()
}

// TestGroupCommitBatchedCreateTaken: the leases of a batch are created in one
// statement; when one address was bound meanwhile by another server (a record
// this server's hints do not know), that commit is refused (NAK: the client
// starts over) and the others of its batch are stored.
func TestGroupCommitBatchedCreateTaken(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	sl := NewLeases(st, 0)
	sl.BatchWindow = 20 * time.Millisecond
	defer sl.Close()
	sn := hammerSubnet(t)
	// The hints are loaded on first use, so bind an address first, then write
	// another server's lease behind this one's back.
	if _, err := sl.Commit(context.Background(), commitReq(sn, "10.0.0.10", 900)); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	obj, err := leaseObject(&dhcp.Lease{IP: netip.MustParseAddr("10.0.0.33"), MAC: net.HardwareAddr{2, 9, 9, 9, 9, 9}, Subnet: sn.Name, State: resource.LeaseBound, ExpiresAt: exp}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Create(context.Background(), obj) }); err != nil {
		t.Fatal(err)
	}
	before := sl.batches.Load()
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = sl.Commit(context.Background(), commitReq(sn, fmt.Sprintf("10.0.0.%d", 20+i), i))
		}()
	}
	wg.Wait()
	if n := sl.batches.Load() - before; n >= 20 {
		t.Fatalf("%d transactions for 20 commits: nothing was batched", n)
	}
	for i, err := range errs {
		ip := fmt.Sprintf("10.0.0.%d", 20+i)
		l := storedLease(t, st, ip)
		if ip == "10.0.0.33" {
			if !errors.Is(err, dhcp.ErrAddressTaken) || l == nil || l.MAC.String() != "02:09:09:09:09:09" {
				t.Errorf("%s, bound by another server: err %v, record %+v", ip, err, l)
			}
			continue
		}
		if err != nil || l == nil || l.State != resource.LeaseBound || l.MAC[5] != byte(i) {
			t.Errorf("%s: err %v, record %+v", ip, err, l)
		}
	}
}
