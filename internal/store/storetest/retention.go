package storetest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/store"
)

// testEventRetention: events older than the cutoff go, and beyond the per-machine
// count the oldest go, machine by machine.
func testEventRetention(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	st := open(t)
	ret, ok := st.(store.Retainer)
	if !ok {
		t.Fatal("the store has no retention (store.Retainer)")
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	update(t, st, func(tx store.Tx) error {
		for i := range 12 {
			for _, m := range []string{"busy", "quiet"} {
				if m == "quiet" && i%4 != 0 {
					continue
				}
				if err := tx.AddEvent(ctx, &store.Event{Machine: m, Time: t0.Add(time.Duration(i) * 24 * time.Hour), Type: "t", Message: fmt.Sprint(i)}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	// busy: days 0..11; quiet: days 0, 4, 8. Older than day 2 goes; busy keeps 5.
	n, err := ret.PruneEvents(ctx, t0.Add(2*24*time.Hour), 5)
	if err != nil {
		t.Fatal(err)
	}
	msgs := func(m string) string {
		var out []string
		view(t, st, func(tx store.Tx) error {
			evs, err := tx.ListEvents(ctx, m, 0)
			for _, e := range evs {
				out = append(out, e.Message)
			}
			return err
		})
		return strings.Join(out, ",")
	}
	if got := msgs("busy"); got != "7,8,9,10,11" {
		t.Errorf("busy keeps %q; want the newest 5, 7..11", got)
	}
	if got := msgs("quiet"); got != "4,8" {
		t.Errorf("quiet keeps %q; want 4,8", got)
	}
	if n != 7+1 {
		t.Errorf("removed %d; want 8", n)
	}
}

// testAuditRetention: removing old audit entries leaves a chain that verifies from
// the retention checkpoint, keyed and anchored; a writer who then removes the
// checkpoint, or entries after it, is caught.
func testAuditRetention(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	st := open(t)
	ret, ok := st.(store.Retainer)
	if !ok {
		t.Fatal("the store has no retention (store.Retainer)")
	}
	raw, ok := st.(rawSQL)
	if !ok {
		t.Skip("the store gives no raw database access to tamper with")
	}
	keyer := st.(store.AuditKeyer)
	key, err := audit.KeyFromKEK([]byte(strings.Repeat("r", 32)))
	if err != nil {
		t.Fatal(err)
	}
	chain := audit.NewChain(key, filepath.Join(t.TempDir(), "audit.head"))
	t.Cleanup(chain.Flush)
	old := time.Now().Add(-500 * 24 * time.Hour)
	update(t, st, func(tx store.Tx) error { // before keying: SHA-256 entries
		return tx.AppendAudit(ctx, &audit.Entry{Time: old, Actor: "a", Action: "create", Kind: "Machine", Name: "pre", Summary: "old"})
	})
	if err := keyer.KeyAuditChain(ctx, chain); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		tm := old.Add(time.Duration(i) * time.Hour)
		if i >= 4 {
			tm = time.Now()
		}
		update(t, st, func(tx store.Tx) error {
			return tx.AppendAudit(ctx, &audit.Entry{Time: tm, Actor: "a", Action: "create", Kind: "Machine", Name: fmt.Sprintf("m%d", i), Summary: "x"})
		})
	}
	before := mustVerify(t, st, chain)
	if !before.OK {
		t.Fatalf("before retention: %+v", before)
	}
	// Entries 1 (SHA-256), 2 (the keyed checkpoint, written now) ... the cutoff
	// falls after m3; the checkpoint "chain-keyed" is recent, so only entry 1 and
	// the four old ones are older: they are removed, not the checkpoint's time.
	removed, err := ret.PruneAudit(ctx, time.Now().Add(-400*24*time.Hour), "system")
	if err != nil {
		t.Fatal(err)
	}
	if removed == 0 {
		t.Fatal("nothing removed")
	}
	chain.Flush()
	after := mustVerify(t, st, chain)
	if !after.OK || after.Entries != before.Entries-removed+1 {
		t.Fatalf("after removing %d entries: %+v (before %+v), want OK and a checkpoint more", removed, after, before)
	}
	if again, err := ret.PruneAudit(ctx, time.Now().Add(-400*24*time.Hour), "system"); err != nil || again != 0 {
		t.Fatalf("second run: %d, %v; want nothing more to remove", again, err)
	}
	// The store reopened (a restart) keys the chain again without a new checkpoint.
	if err := keyer.KeyAuditChain(ctx, chain); err != nil {
		t.Fatal(err)
	}
	if res := mustVerify(t, st, chain); !res.OK || res.Entries != after.Entries {
		t.Fatalf("after keying again: %+v", res)
	}

	var entries []audit.Entry
	view(t, st, func(tx store.Tx) error { entries, err = tx.ListAudit(ctx, 0, 0); return err })
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := raw.DB().ExecContext(ctx, raw.Rebind(q), args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// A writer removes the oldest remaining entry: the chain no longer starts
	// where the checkpoint says.
	exec(`DELETE FROM audit WHERE seq = ?`, entries[0].Seq)
	if res := mustVerify(t, st, chain); res.OK {
		t.Fatalf("after removing the first entry left by retention: %+v, want a failure", res)
	}
	// A writer removes the retention checkpoint and everything before it.
	var cp int64
	for _, e := range entries {
		if audit.IsRetention(&e) {
			cp = e.Seq
		}
	}
	exec(`DELETE FROM audit WHERE seq <= ?`, cp)
	if res := mustVerify(t, st, chain); res.OK {
		t.Fatalf("after removing the retention checkpoint: %+v, want a failure", res)
	}
}
