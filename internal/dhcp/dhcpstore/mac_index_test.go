package dhcpstore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// countingStore counts the read transactions the DHCP side opens, and passes
// the store's own-change counter through.
type countingStore struct {
	store.Store
	views atomic.Int64
}

func (c *countingStore) View(ctx context.Context, fn func(store.Tx) error) error {
	c.views.Add(1)
	return c.Store.View(ctx, fn)
}

func (c *countingStore) LocalKeysChanges() int64 {
	return c.Store.(store.KeysNotifier).LocalKeysChanges()
}

// waitIndexed polls until the MAC index is current and knows hw (if given).
func waitIndexed(t *testing.T, m *Machines, hw ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m.macs != nil {
			ok := true
			for _, h := range append(hw, macM) {
				known, current := m.macs.known(dhcptest.MAC(h), time.Now())
				ok = ok && current && (known || h == macM)
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the MAC index never became current")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMACIndex: once the index is loaded, an unknown MAC costs no store read; a
// machine created through this process is found at once; one created by another
// replica (another handle on the database) within MACIndexTTL; the keys are
// reloaded only when they changed.
func TestMACIndex(t *testing.T) {
	dir := t.TempDir()
	inner := testkit.OpenSQLite(t, dir)
	st := &countingStore{Store: inner}
	m := &Machines{Store: st, CacheTTL: 50 * time.Millisecond, MACIndexTTL: 100 * time.Millisecond}
	ctx := context.Background()
	createObject(t, inner, "Machine", "web-1", resource.MachineSpec{Interfaces: []resource.Interface{{MAC: macM, IP: "10.0.0.20"}}})

	if _, err := m.MachineByMAC(ctx, dhcptest.MAC("52:54:00:00:0a:01")); !errors.Is(err, dhcp.ErrUnknownMachine) {
		t.Fatalf("unknown MAC before the index: %v", err)
	}
	waitIndexed(t, m)
	before := st.views.Load()
	for i := range 100 {
		hw := dhcptest.MAC("52:54:00:00:0b:00")
		hw[5] = byte(i)
		if _, err := m.MachineByMAC(ctx, hw); !errors.Is(err, dhcp.ErrUnknownMachine) {
			t.Fatalf("unknown MAC %s: %v", hw, err)
		}
	}
	if n := st.views.Load() - before; n != 0 {
		t.Errorf("100 unknown MACs with a current index cost %d store reads, want 0", n)
	}
	if got, err := m.MachineByMAC(ctx, dhcptest.MAC(macM)); err != nil || got.Name != "web-1" {
		t.Fatalf("known MAC: %+v %v", got, err)
	}

	// Through this process: seen at once, even within the index's TTL.
	createObject(t, inner, "Machine", "web-2", resource.MachineSpec{Interfaces: []resource.Interface{{MAC: "52:54:00:00:0c:01"}}})
	if got, err := m.MachineByMAC(ctx, dhcptest.MAC("52:54:00:00:0c:01")); err != nil || got.Name != "web-2" {
		t.Fatalf("a machine created through this process: %+v %v", got, err)
	}

	// Another replica: a second handle on the same database (its commits are not
	// this handle's own).
	other := testkit.OpenSQLite(t, dir)
	createObject(t, other, "Machine", "web-3", resource.MachineSpec{Interfaces: []resource.Interface{{MAC: "52:54:00:00:0d:01"}}})
	deadline := time.Now().Add(3 * time.Second)
	for {
		got, err := m.MachineByMAC(ctx, dhcptest.MAC("52:54:00:00:0d:01"))
		if err == nil && got.Name == "web-3" {
			break
		}
		if !errors.Is(err, dhcp.ErrUnknownMachine) || time.Now().After(deadline) {
			t.Fatalf("a machine created by another replica: %+v %v", got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Nothing changed: checks of the version reuse the set.
	waitIndexed(t, m, "52:54:00:00:0d:01")
	loads := m.macs.loads.Load()
	time.Sleep(250 * time.Millisecond) // past two TTLs
	waitIndexed(t, m)
	if n := m.macs.loads.Load(); n != loads {
		t.Errorf("the keys were reloaded %d times with no change", n-loads)
	}

	// Deleting the machine forgets its MAC.
	if err := inner.Update(ctx, func(tx store.Tx) error { return tx.Delete(ctx, "Machine", "web-1", "") }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // the found answer's cache
	if _, err := m.MachineByMAC(ctx, dhcptest.MAC(macM)); !errors.Is(err, dhcp.ErrUnknownMachine) {
		t.Fatalf("a deleted machine's MAC: %v", err)
	}
}
