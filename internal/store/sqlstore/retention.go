package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/store"
)

var _ store.Retainer = (*Store)(nil)

// Retention deletes in batches, each its own transaction, so that a first run over
// a large table never holds SQLite's write lock (or a long PostgreSQL transaction)
// for long.
const pruneBatch = 5000

const (
	qPruneEventsOld = `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time < ? ORDER BY id LIMIT ?) RETURNING id`
	// Both engines have window functions (SQLite since 3.25).
	qPruneEventsCount = `DELETE FROM events WHERE id IN (SELECT id FROM (
		SELECT id, ROW_NUMBER() OVER (PARTITION BY machine ORDER BY id DESC) AS n FROM events) ranked
		WHERE n > ? LIMIT ?) RETURNING id`
	// The floors only grow: a watch resuming from before one is answered 410 Gone.
	qRaiseEventsFloor  = `UPDATE meta SET events_floor = ? WHERE id = 1 AND events_floor < ?`
	qRaiseChangesFloor = `UPDATE meta SET changes_floor = ? WHERE id = 1 AND changes_floor < ?`
	// The newest change beyond the newest keep (sequences may have gaps: rolled-back
	// writes on PostgreSQL use up identity values).
	qChangesCut      = `SELECT COALESCE((SELECT seq FROM changes ORDER BY seq DESC LIMIT 1 OFFSET ?), 0)`
	qPruneChanges    = `DELETE FROM changes WHERE seq IN (SELECT seq FROM changes WHERE seq <= ? ORDER BY seq LIMIT ?)`
	qAuditLastBefore = `SELECT COALESCE(MAX(seq), 0) FROM audit WHERE time < ?`
	qAuditFirst      = `SELECT COALESCE(MIN(seq), 0) FROM audit`
	qAuditEntry      = `SELECT hash FROM audit WHERE seq = ?`
	qPruneAudit      = `DELETE FROM audit WHERE seq <= ?`
)

// PruneEvents implements store.Retainer.
func (s *Store) PruneEvents(ctx context.Context, before time.Time, keepPerMachine int) (int64, error) {
	var total int64
	run := func(q string, arg any) error {
		for {
			var n int64
			err := s.Update(ctx, func(stx store.Tx) error {
				t := stx.(*tx)
				rows, err := t.query(ctx, s.d.Rebind(q), arg, pruneBatch)
				if err != nil {
					return err
				}
				var newest int64
				for rows.Next() {
					var id int64
					if err := rows.Scan(&id); err != nil {
						rows.Close()
						return err
					}
					n, newest = n+1, max(newest, id)
				}
				if err := errors.Join(rows.Err(), rows.Close()); err != nil {
					return err
				}
				if n == 0 {
					return nil
				}
				_, err = t.exec(ctx, s.d.Rebind(qRaiseEventsFloor), newest, newest)
				return err
			})
			if err != nil {
				return err
			}
			total += n
			if n < pruneBatch {
				return nil
			}
		}
	}
	if err := run(qPruneEventsOld, before.UTC().UnixNano()); err != nil {
		return total, fmt.Errorf("store: remove events older than %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	if keepPerMachine > 0 {
		if err := run(qPruneEventsCount, int64(keepPerMachine)); err != nil {
			return total, fmt.Errorf("store: remove events beyond %d per machine: %w", keepPerMachine, err)
		}
	}
	return total, nil
}

// PruneChanges implements store.Retainer.
func (s *Store) PruneChanges(ctx context.Context, keep int64) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.Update(ctx, func(stx store.Tx) error {
			t := stx.(*tx)
			var last int64
			if err := t.queryRow(ctx, s.d.Rebind(qChangesCut), max(keep, 0)).Scan(&last); err != nil {
				return err
			}
			if last <= 0 {
				return nil
			}
			res, err := t.exec(ctx, s.d.Rebind(qPruneChanges), last, pruneBatch)
			if err != nil {
				return err
			}
			if n, err = res.RowsAffected(); err != nil || n == 0 {
				return err
			}
			// Raised to the cut at once, before later batches removed the rest up to
			// it: a watch refused a little early relists; one let through would miss.
			_, err = t.exec(ctx, s.d.Rebind(qRaiseChangesFloor), last, last)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("store: remove all but the newest %d changes: %w", keep, err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}

// PruneAudit implements store.Retainer: in one transaction, it appends the
// retention checkpoint (sealed like every entry: keyed, and anchored after the
// commit) and removes the entries it names.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, actor string) (int64, error) {
	var removed int64
	err := s.Update(ctx, func(stx store.Tx) error {
		t := stx.(*tx)
		headSeq, _, err := t.auditHead(ctx)
		if err != nil {
			return err
		}
		var first, last int64
		if err := t.queryRow(ctx, s.d.Rebind(qAuditFirst)).Scan(&first); err != nil {
			return err
		}
		if err := t.queryRow(ctx, s.d.Rebind(qAuditLastBefore), before.UTC().UnixNano()).Scan(&last); err != nil {
			return err
		}
		// The newest entry always stays: the chain's head is in the database.
		last = min(last, headSeq-1)
		if last < first || first == 0 {
			return nil
		}
		var hash string
		if err := t.queryRow(ctx, s.d.Rebind(qAuditEntry), last).Scan(&hash); err != nil {
			return fmt.Errorf("read audit entry %d: %w", last, err)
		}
		e := &audit.Entry{Actor: actor, Action: audit.RetentionAction, Kind: audit.CheckpointKind, Name: audit.RetentionName,
			Summary: fmt.Sprintf(audit.RetentionFormat, first, last, before.UTC().Format(time.RFC3339), last, hash, s.keyedFrom.Load())}
		if err := t.appendAudit(ctx, e); err != nil {
			return fmt.Errorf("append the retention checkpoint: %w", err)
		}
		res, err := t.exec(ctx, s.d.Rebind(qPruneAudit), last)
		if err != nil {
			return err
		}
		removed, err = res.RowsAffected()
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return 0, err
		}
		return 0, fmt.Errorf("store: audit retention before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return removed, nil
}
