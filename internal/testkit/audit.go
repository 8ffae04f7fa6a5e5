package testkit

import (
	"context"
	"testing"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/store"
)

// AuditLog is every audit entry in st, oldest first.
func AuditLog(tb testing.TB, st store.Store) []audit.Entry {
	tb.Helper()
	ctx := context.Background()
	var out []audit.Entry
	err := st.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.ListAudit(ctx, 0, 0)
		return err
	})
	if err != nil {
		tb.Fatalf("list audit: %v", err)
	}
	return out
}

// AuditEntries is the audit entries in st with action, oldest first.
func AuditEntries(tb testing.TB, st store.Store, action string) []audit.Entry {
	tb.Helper()
	var out []audit.Entry
	for _, e := range AuditLog(tb, st) {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}
