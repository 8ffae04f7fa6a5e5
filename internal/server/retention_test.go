package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

// TestRetention: kiln serve's retention run removes old events, keeps a machine's
// newest ones, removes old audit entries, and the audit chain still verifies.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	s := newTestServerWith(t, Config{EventRetention: 24 * time.Hour, EventRetentionCount: 3, AuditRetention: 24 * time.Hour})
	now := time.Now()
	if err := s.store.Update(ctx, func(tx store.Tx) error {
		for i := range 10 {
			if err := tx.AddEvent(ctx, &store.Event{Machine: "m", Time: now.Add(-time.Duration(10-i) * time.Minute), Type: "t", Message: fmt.Sprint(i)}); err != nil {
				return err
			}
		}
		return tx.AddEvent(ctx, &store.Event{Machine: "old", Time: now.Add(-48 * time.Hour), Type: "t", Message: "old"})
	}); err != nil {
		t.Fatal(err)
	}
	entries := len(auditEntries(t, s.store))
	s.retain(ctx, now.Add(48*time.Hour)) // every audit entry so far is old by then
	var m, old []store.Event
	s.store.View(ctx, func(tx store.Tx) error {
		m, _ = tx.ListEvents(ctx, "m", 0)
		old, _ = tx.ListEvents(ctx, "old", 0)
		return nil
	})
	if len(m) != 0 || len(old) != 0 {
		t.Fatalf("events left two days later: %d of m, %d old", len(m), len(old))
	}
	after := auditEntries(t, s.store)
	if len(after) != 2 {
		t.Fatalf("audit entries after retention: %d (of %d); want the newest and the checkpoint", len(after), entries)
	}
	s.auditChain.Flush()
	res, err := store.VerifyAudit(ctx, s.store, s.auditChain)
	if err != nil || !res.OK {
		t.Fatalf("verify after retention: %+v %v", res, err)
	}
}
