package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/store"
)

// rawSQL is what a database writer has: the tables, without Kiln.
type rawSQL interface {
	DB() *sql.DB
	Rebind(q string) string
}

func appendAudit(t *testing.T, st store.Store, name string) {
	t.Helper()
	update(t, st, func(tx store.Tx) error {
		return tx.AppendAudit(context.Background(), &audit.Entry{Actor: "tok-1", Action: "create", Kind: "Machine", Name: name, Summary: "created"})
	})
}

func mustVerify(t *testing.T, st store.Store, chain *audit.Chain) store.AuditVerification {
	t.Helper()
	res, err := store.VerifyAudit(context.Background(), st, chain)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return res
}

// testAuditChainAnchored: a database writer who removes the newest entries and moves
// the head recorded in the database back with them, or rewrites an entry with a
// recomputed SHA-256, is caught by the keyed chain and its anchor outside the
// database. Entries written before the chain was keyed still verify (SHA-256 up to
// the checkpoint); an anchor behind the database (another replica's) is accepted.
func testAuditChainAnchored(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	st := open(t)
	raw, ok := st.(rawSQL)
	if !ok {
		t.Skip("the store gives no raw database access to tamper with")
	}
	keyer, ok := st.(store.AuditKeyer)
	if !ok {
		t.Fatal("the store cannot key its audit chain (store.AuditKeyer)")
	}
	appendAudit(t, st, "before-keying") // written by a Kiln that did not key the chain
	key, err := audit.KeyFromKEK([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	headFile := filepath.Join(t.TempDir(), "audit.head")
	chain := audit.NewChain(key, headFile)
	t.Cleanup(chain.Flush) // before the directory goes
	if err := keyer.KeyAuditChain(ctx, chain); err != nil {
		t.Fatalf("key the audit chain: %v", err)
	}
	for i := range 5 {
		appendAudit(t, st, fmt.Sprintf("m%d", i))
	}
	chain.Flush()
	res := mustVerify(t, st, chain)
	if !res.OK || res.Anchored != res.Entries {
		t.Fatalf("untouched chain: %+v, want OK and anchored at the newest entry", res)
	}
	entries := verifyAuditKeyed(t, st, chain)
	n := len(entries)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := raw.DB().ExecContext(ctx, raw.Rebind(q), args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	// An anchor that lags (another replica wrote the newest entries) is accepted.
	lagging := audit.NewChain(key, filepath.Join(t.TempDir(), "lagging.head"))
	if err := lagging.Record(entries[n-3].Seq, entries[n-3].Hash, checkpointSeq(entries)); err != nil {
		t.Fatal(err)
	}
	if res := mustVerify(t, st, lagging); !res.OK {
		t.Fatalf("anchor behind the database: %+v, want OK", res)
	}

	// A writer removes the two newest entries and moves the stored head back.
	exec(`DELETE FROM audit WHERE seq > ?`, entries[n-3].Seq)
	exec(`UPDATE meta SET audit_seq = ?, audit_hash = ? WHERE id = 1`, entries[n-3].Seq, entries[n-3].Hash)
	res = mustVerify(t, st, chain)
	if res.OK || !strings.Contains(res.Error, "removed") {
		t.Fatalf("after removing the newest entries and the stored head with them: %+v, want a failure naming removed entries", res)
	}
	// The lagging anchor still verifies what is left: it never reached the removed part.
	if res := mustVerify(t, st, lagging); !res.OK {
		t.Fatalf("lagging anchor after the cut: %+v", res)
	}

	// A writer rewrites an entry and recomputes its hash the unkeyed way.
	e := entries[n-3]
	e.Summary = "nothing to see"
	e.Hash = audit.ComputeHash(&e)
	exec(`UPDATE audit SET summary = ?, hash = ? WHERE seq = ?`, e.Summary, e.Hash, e.Seq)
	exec(`UPDATE meta SET audit_hash = ? WHERE id = 1`, e.Hash)
	if res := mustVerify(t, st, lagging); res.OK {
		t.Fatalf("after rewriting entry %d with a SHA-256 hash: %+v, want a failure", e.Seq, res)
	}
}

func checkpointSeq(entries []audit.Entry) int64 {
	for _, e := range entries {
		if audit.IsCheckpoint(&e) {
			return e.Seq
		}
	}
	return 0
}

// verifyAuditKeyed returns every entry after checking them against chain.
func verifyAuditKeyed(t *testing.T, st store.Store, chain *audit.Chain) []audit.Entry {
	t.Helper()
	var entries []audit.Entry
	view(t, st, func(tx store.Tx) error {
		var err error
		entries, err = tx.ListAudit(context.Background(), 0, 0)
		return err
	})
	v := audit.Verifier{Chain: chain}
	for i := range entries {
		if err := v.Next(&entries[i]); err != nil {
			t.Fatalf("keyed chain: %v", err)
		}
	}
	return entries
}

// BenchAppendAudit measures one transaction that appends one audit entry, with the
// chain unkeyed and keyed (HMAC, and the head file written after each commit).
func BenchAppendAudit(b *testing.B, open func(b *testing.B) store.Store) {
	for _, keyed := range []bool{false, true} {
		name := "unkeyed"
		if keyed {
			name = "keyed+anchored"
		}
		b.Run(name, func(b *testing.B) {
			st := open(b)
			ctx := context.Background()
			if keyed {
				key, _ := audit.KeyFromKEK([]byte(strings.Repeat("k", 32)))
				chain := audit.NewChain(key, filepath.Join(b.TempDir(), "audit.head"))
				b.Cleanup(chain.Flush) // before the directory goes
				if err := st.(store.AuditKeyer).KeyAuditChain(ctx, chain); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				err := st.Update(ctx, func(tx store.Tx) error {
					return tx.AppendAudit(ctx, &audit.Entry{Actor: "bench", Action: "update", Kind: "Machine", Name: "m", Summary: "changed: status"})
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
