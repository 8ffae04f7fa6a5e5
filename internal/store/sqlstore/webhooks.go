package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

var _ store.WebhookState = (*Store)(nil)

// keepDeliveries bounds a webhook's dead-letter list: the newest stay.
const keepDeliveries = 1000

// ClaimWebhook implements store.WebhookState.
func (s *Store) ClaimWebhook(ctx context.Context, name, owner string, start int64, now, until time.Time) (cursor int64, ok bool, err error) {
	err = s.Update(ctx, func(stx store.Tx) error {
		t := stx.(*tx)
		var holder string
		var lease int64
		err := t.queryRow(ctx, s.d.Rebind(`SELECT seq, owner, lease_until FROM webhook_cursors WHERE name = ?`), name).Scan(&cursor, &holder, &lease)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			cursor = start
			_, err = t.exec(ctx, s.d.Rebind(`INSERT INTO webhook_cursors (name, seq, owner, lease_until, updated_at) VALUES (?, ?, ?, ?, ?)`),
				name, start, owner, until.UnixNano(), now.UnixNano())
			ok = err == nil
			return err
		case err != nil:
			return err
		case holder != owner && lease > now.UnixNano():
			return nil // another replica delivers it
		}
		_, err = t.exec(ctx, s.d.Rebind(`UPDATE webhook_cursors SET owner = ?, lease_until = ? WHERE name = ?`), owner, until.UnixNano(), name)
		ok = err == nil
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("store: claim the delivery of webhook %q: %w", name, err)
	}
	return cursor, ok, nil
}

// AdvanceWebhook implements store.WebhookState.
func (s *Store) AdvanceWebhook(ctx context.Context, name, owner string, seq int64, until time.Time, d *store.WebhookDelivery) (ok bool, err error) {
	err = s.Update(ctx, func(stx store.Tx) error {
		t := stx.(*tx)
		res, err := t.exec(ctx, s.d.Rebind(`UPDATE webhook_cursors SET seq = ?, lease_until = ?, updated_at = ? WHERE name = ? AND owner = ?`),
			seq, until.UnixNano(), now().UnixNano(), name, owner)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return err // another replica took it over: write nothing
		}
		ok = true
		if d == nil {
			return nil
		}
		if d.Time.IsZero() {
			d.Time = now()
		}
		if err := t.queryRow(ctx, s.d.Rebind(`INSERT INTO webhook_deliveries (webhook, seq, type, state, attempts, last_status, last_error, time)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`), name, d.EventID, displayText(d.Type), d.State, d.Attempts, d.LastStatus, displayText(d.LastError), d.Time.UnixNano()).Scan(&d.ID); err != nil {
			return err
		}
		_, err = t.exec(ctx, s.d.Rebind(`DELETE FROM webhook_deliveries WHERE webhook = ? AND id <= ?`), name, d.ID-keepDeliveries)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: advance webhook %q to event %d: %w", name, seq, err)
	}
	return ok, nil
}

// WebhookDeliveries implements store.WebhookState.
func (s *Store) WebhookDeliveries(ctx context.Context, name string, limit int) ([]store.WebhookDelivery, error) {
	var out []store.WebhookDelivery
	err := s.View(ctx, func(stx store.Tx) error {
		rows, err := stx.(*tx).query(ctx, s.d.Rebind(`SELECT id, webhook, seq, type, state, attempts, last_status, last_error, time
			FROM webhook_deliveries WHERE webhook = ? ORDER BY id DESC LIMIT ?`), name, int64(max(limit, 1)))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d store.WebhookDelivery
			var ts int64
			if err := rows.Scan(&d.ID, &d.Webhook, &d.EventID, &d.Type, &d.State, &d.Attempts, &d.LastStatus, &d.LastError, &ts); err != nil {
				return err
			}
			d.Time = fromNanos(ts)
			out = append(out, d)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: list deliveries of webhook %q: %w", name, err)
	}
	return out, nil
}

// ForgetWebhook implements store.WebhookState.
func (s *Store) ForgetWebhook(ctx context.Context, name string) error {
	err := s.Update(ctx, func(stx store.Tx) error {
		t := stx.(*tx)
		if _, err := t.exec(ctx, s.d.Rebind(`DELETE FROM webhook_cursors WHERE name = ?`), name); err != nil {
			return err
		}
		_, err := t.exec(ctx, s.d.Rebind(`DELETE FROM webhook_deliveries WHERE webhook = ?`), name)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: forget webhook %q: %w", name, err)
	}
	return nil
}
