package sqlstore

import (
	"context"
	"fmt"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/store"
)

var _ store.AuditKeyer = (*Store)(nil)

// KeyAuditChain keys the audit chain with chain: an existing database gets a
// checkpoint entry (sealed with chain; entries before it keep their SHA-256 hashes),
// and from then on every appended entry is sealed with chain and anchored in its head
// file after its transaction commits. Call it once, before the store is shared: an
// entry appended meanwhile by another goroutine would be sealed the old way.
//
// An anchor the database has fallen behind (its newest entry is older, or the entry
// at the anchored sequence has another hash) is left where it is, so that
// `kiln audit verify` keeps reporting it; the chain still seals new entries.
func (s *Store) KeyAuditChain(ctx context.Context, chain *audit.Chain) error {
	var keyedFrom, headSeq int64
	var headHash string
	err := s.Update(ctx, func(stx store.Tx) error {
		t := stx.(*tx)
		cps, err := t.ListAuditFor(ctx, audit.CheckpointKind, audit.CheckpointName, 0, 1)
		if err != nil {
			return err
		}
		if len(cps) > 0 {
			keyedFrom = cps[0].Seq
			headSeq, headHash, err = t.auditHead(ctx)
			return err
		}
		// Audit retention may have removed the checkpoint: the retention
		// checkpoints carry where the chain is keyed from.
		if keyedFrom, err = t.keyedFromRetention(ctx); err != nil || keyedFrom > 0 {
			if err == nil {
				headSeq, headHash, err = t.auditHead(ctx)
			}
			return err
		}
		seq, hash, err := t.auditHead(ctx)
		if err != nil {
			return err
		}
		summary := "audit chain keyed (HMAC-SHA256) from this entry on"
		if seq > 0 {
			summary += fmt.Sprintf("; entries 1 to %d, written before, are SHA-256", seq)
		}
		e := &audit.Entry{Time: now().UTC().Round(0), Actor: "system", Action: audit.CheckpointAction, Kind: audit.CheckpointKind,
			Name: audit.CheckpointName, Summary: summary}
		chain.Seal(e, seq, hash)
		if _, err := t.exec(ctx, t.q.insertAudit, e.Seq, e.Time.UnixNano(), e.Actor, e.Action, e.Kind, e.Name, e.Summary, e.PrevHash, e.Hash); err != nil {
			return fmt.Errorf("append the audit chain checkpoint: %w", err)
		}
		res, err := t.exec(ctx, t.q.setAuditHead, e.Seq, e.Hash, seq)
		if err != nil {
			return fmt.Errorf("record the audit head: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("%w: the audit head moved: writers are not serialized", store.ErrConflict)
		}
		keyedFrom, headSeq, headHash = e.Seq, e.Seq, e.Hash
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: key the audit chain: %w", err)
	}
	anchor, ok, err := chain.ReadHead()
	switch {
	case err != nil:
		chain.Freeze()
	case ok && !s.reaches(ctx, anchor):
		chain.Freeze()
	}
	s.keyedFrom.Store(keyedFrom)
	s.chain.Store(chain)
	// Without a head file yet (the first keyed start, a new replica) the database as
	// it is now is the base the anchor starts from.
	return chain.Record(headSeq, headHash, keyedFrom)
}

// reaches reports whether the database holds the anchored entry with its hash.
func (s *Store) reaches(ctx context.Context, anchor audit.Head) bool {
	var ok bool
	_ = s.View(ctx, func(tx store.Tx) error {
		es, err := tx.ListAudit(ctx, anchor.Seq-1, 1)
		ok = err == nil && len(es) == 1 && es[0].Seq == anchor.Seq && es[0].Hash == anchor.Hash
		return nil
	})
	return ok
}

// keyedFromRetention is where the newest retention checkpoint says the chain is
// keyed from (0: none says so).
func (t *tx) keyedFromRetention(ctx context.Context) (int64, error) {
	rs, err := t.ListAuditFor(ctx, audit.CheckpointKind, audit.RetentionName, 0, 0)
	if err != nil {
		return 0, err
	}
	for i := len(rs) - 1; i >= 0; i-- {
		if _, _, kf, err := audit.RetentionPoint(&rs[i]); err == nil && kf > 0 {
			return kf, nil
		}
	}
	return 0, nil
}
