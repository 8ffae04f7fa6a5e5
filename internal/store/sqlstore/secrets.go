package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/store"
)

// The secret queries are not in the prepared set (queries.go): they are off the hot
// paths, and rebinding a short query per call costs nothing next to the round trip.
const (
	qAuditFor = `SELECT seq, time, actor, action, kind, name, summary, prev_hash, hash FROM audit
		WHERE kind = ? AND name = ? AND seq > ? ORDER BY seq LIMIT ?`
	qNextSecretVersion = `SELECT COALESCE(MAX(version), 0) FROM secret_versions WHERE name = ?`
	qInsertSecretVer   = `INSERT INTO secret_versions (name, version, kek_id, wrapped_dek, nonce, ciphertext, created_at, created_by)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	secretVerCols       = `name, version, kek_id, wrapped_dek, nonce, ciphertext, created_at, created_by`
	qGetSecretVer       = `SELECT ` + secretVerCols + ` FROM secret_versions WHERE name = ? AND version = ?`
	qLatestSecretVer    = `SELECT ` + secretVerCols + ` FROM secret_versions WHERE name = ? ORDER BY version DESC LIMIT 1`
	qListSecretVers     = `SELECT ` + secretVerCols + ` FROM secret_versions WHERE name = ? ORDER BY version`
	qListAllSecretVers  = `SELECT ` + secretVerCols + ` FROM secret_versions ORDER BY name, version`
	qRewrapSecretVer    = `UPDATE secret_versions SET kek_id = ?, wrapped_dek = ? WHERE name = ? AND version = ?`
	qSecretKEKIDs       = `SELECT DISTINCT kek_id FROM secret_versions ORDER BY kek_id`
	qDeleteSecretVers   = `DELETE FROM secret_versions WHERE name = ?`
	qDeleteSecretHandls = `DELETE FROM secret_handles WHERE secret = ?`
	handleCols          = `id_hash, secret, version, machine, channel, expires_at, used_at, created_at`
	qInsertHandle       = `INSERT INTO secret_handles (` + handleCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id_hash) DO NOTHING`
	qGetHandle = `SELECT ` + handleCols + ` FROM secret_handles WHERE id_hash = ?`
	// The one statement that redeems a handle: whoever changes the row owns the release.
	qUseHandle    = `UPDATE secret_handles SET used_at = ? WHERE id_hash = ? AND used_at IS NULL AND expires_at > ?`
	qPurgeHandles = `DELETE FROM secret_handles WHERE expires_at < ?`
)

func (t *tx) ListAuditFor(ctx context.Context, kind, name string, after int64, limit int) ([]audit.Entry, error) {
	if limit <= 0 {
		limit = 1 << 62
	}
	rows, err := t.query(ctx, t.s.d.Rebind(qAuditFor), kind, name, after, int64(limit))
	if err != nil {
		return nil, fmt.Errorf("store: list audit entries of %s %q: %w", kind, name, err)
	}
	defer rows.Close()
	var out []audit.Entry
	for rows.Next() {
		var e audit.Entry
		var ts int64
		if err := rows.Scan(&e.Seq, &ts, &e.Actor, &e.Action, &e.Kind, &e.Name, &e.Summary, &e.PrevHash, &e.Hash); err != nil {
			return nil, fmt.Errorf("store: list audit entries of %s %q: %w", kind, name, err)
		}
		e.Time = fromNanos(ts)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list audit entries of %s %q: %w", kind, name, err)
	}
	return out, nil
}

// ---- secret versions --------------------------------------------------------

func (t *tx) AddSecretVersion(ctx context.Context, v *store.SecretVersion) error {
	op := fmt.Sprintf("add a version of secret %q", v.Name)
	if err := t.writable(op); err != nil {
		return err
	}
	if err := t.addSecretVersion(ctx, v); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

func (t *tx) addSecretVersion(ctx context.Context, v *store.SecretVersion) error {
	if v.Name == "" || v.KEKID == "" || len(v.WrappedDEK) == 0 || len(v.Nonce) == 0 || len(v.Ciphertext) == 0 {
		return fmt.Errorf("name, kek id, wrapped key, nonce and ciphertext are required")
	}
	var newest int64
	if err := t.queryRow(ctx, t.s.d.Rebind(qNextSecretVersion), v.Name).Scan(&newest); err != nil {
		return err
	}
	if v.CreatedAt.IsZero() {
		v.CreatedAt = now()
	}
	v.CreatedAt = v.CreatedAt.UTC().Round(0)
	_, err := t.exec(ctx, t.s.d.Rebind(qInsertSecretVer), v.Name, newest+1, v.KEKID, v.WrappedDEK, v.Nonce, v.Ciphertext,
		v.CreatedAt.UnixNano(), v.CreatedBy)
	if t.s.d.isUniqueViolation(err) {
		return fmt.Errorf("%w: version %d was added concurrently: writers are not serialized", store.ErrConflict, newest+1)
	}
	if err != nil {
		return err
	}
	v.Version = newest + 1
	return nil
}

func scanSecretVersion(sc scanner) (*store.SecretVersion, error) {
	var v store.SecretVersion
	var created int64
	if err := sc.Scan(&v.Name, &v.Version, &v.KEKID, &v.WrappedDEK, &v.Nonce, &v.Ciphertext, &created, &v.CreatedBy); err != nil {
		return nil, err
	}
	v.CreatedAt = fromNanos(created)
	return &v, nil
}

func (t *tx) GetSecretVersion(ctx context.Context, name string, version int64) (*store.SecretVersion, error) {
	var row *sql.Row
	if version <= 0 {
		row = t.queryRow(ctx, t.s.d.Rebind(qLatestSecretVer), name)
	} else {
		row = t.queryRow(ctx, t.s.d.Rebind(qGetSecretVer), name, version)
	}
	v, err := scanSecretVersion(row)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		if version <= 0 {
			return nil, fmt.Errorf("store: get the newest version of secret %q: %w", name, err)
		}
		return nil, fmt.Errorf("store: get version %d of secret %q: %w", version, name, err)
	}
	return v, nil
}

func (t *tx) ListSecretVersions(ctx context.Context, name string) ([]store.SecretVersion, error) {
	var rows *sql.Rows
	var err error
	if name == "" {
		rows, err = t.query(ctx, qListAllSecretVers)
	} else {
		rows, err = t.query(ctx, t.s.d.Rebind(qListSecretVers), name)
	}
	if err != nil {
		return nil, fmt.Errorf("store: list versions of secret %q: %w", name, err)
	}
	defer rows.Close()
	var out []store.SecretVersion
	for rows.Next() {
		v, err := scanSecretVersion(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list versions of secret %q: %w", name, err)
		}
		out = append(out, *v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list versions of secret %q: %w", name, err)
	}
	return out, nil
}

func (t *tx) RewrapSecretVersion(ctx context.Context, name string, version int64, kekID string, wrappedDEK []byte) error {
	op := fmt.Sprintf("re-wrap version %d of secret %q", version, name)
	if err := t.writable(op); err != nil {
		return err
	}
	if kekID == "" || len(wrappedDEK) == 0 {
		return fmt.Errorf("store: %s: kek id and wrapped key are required", op)
	}
	res, err := t.exec(ctx, t.s.d.Rebind(qRewrapSecretVer), kekID, wrappedDEK, name, version)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

func (t *tx) SecretKEKIDs(ctx context.Context) ([]string, error) {
	rows, err := t.query(ctx, qSecretKEKIDs)
	if err != nil {
		return nil, fmt.Errorf("store: list key-encryption key ids: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("store: list key-encryption key ids: %w", err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list key-encryption key ids: %w", err)
	}
	return out, nil
}

func (t *tx) DeleteSecretData(ctx context.Context, name string) (int64, error) {
	op := fmt.Sprintf("delete the versions of secret %q", name)
	if err := t.writable(op); err != nil {
		return 0, err
	}
	res, err := t.exec(ctx, t.s.d.Rebind(qDeleteSecretVers), name)
	if err != nil {
		return 0, fmt.Errorf("store: %s: %w", op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: %s: %w", op, err)
	}
	if _, err := t.exec(ctx, t.s.d.Rebind(qDeleteSecretHandls), name); err != nil {
		return 0, fmt.Errorf("store: delete the handles of secret %q: %w", name, err)
	}
	return n, nil
}

// ---- handles ------------------------------------------------------------------

func (t *tx) CreateSecretHandle(ctx context.Context, h *store.SecretHandle) error {
	op := fmt.Sprintf("create a handle for secret %q", h.Secret)
	if err := t.writable(op); err != nil {
		return err
	}
	if h.IDHash == "" || h.Secret == "" || h.Machine == "" || h.Version <= 0 || h.ExpiresAt.IsZero() {
		return fmt.Errorf("store: %s: id hash, secret, version, machine and expiry are required", op)
	}
	if h.CreatedAt.IsZero() {
		h.CreatedAt = now()
	}
	h.CreatedAt, h.ExpiresAt = h.CreatedAt.UTC().Round(0), h.ExpiresAt.UTC().Round(0)
	var used sql.NullInt64
	if h.UsedAt != nil {
		used = sql.NullInt64{Int64: h.UsedAt.UnixNano(), Valid: true}
	}
	if err := t.insert(ctx, t.s.d.Rebind(qInsertHandle), h.IDHash, h.Secret, h.Version, h.Machine, h.Channel,
		h.ExpiresAt.UnixNano(), used, h.CreatedAt.UnixNano()); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

func scanHandle(sc scanner) (*store.SecretHandle, error) {
	var h store.SecretHandle
	var expires, created int64
	var used sql.NullInt64
	if err := sc.Scan(&h.IDHash, &h.Secret, &h.Version, &h.Machine, &h.Channel, &expires, &used, &created); err != nil {
		return nil, err
	}
	h.ExpiresAt, h.CreatedAt = fromNanos(expires), fromNanos(created)
	if used.Valid {
		h.UsedAt = ptr(fromNanos(used.Int64))
	}
	return &h, nil
}

func (t *tx) GetSecretHandle(ctx context.Context, idHash string) (*store.SecretHandle, error) {
	h, err := scanHandle(t.queryRow(ctx, t.s.d.Rebind(qGetHandle), idHash))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: get secret handle: %w", err)
	}
	return h, nil
}

func (t *tx) UseSecretHandle(ctx context.Context, idHash string, at time.Time) (*store.SecretHandle, error) {
	if err := t.writable("use secret handle"); err != nil {
		return nil, err
	}
	at = at.UTC().Round(0)
	res, err := t.exec(ctx, t.s.d.Rebind(qUseHandle), at.UnixNano(), idHash, at.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("store: use secret handle: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, fmt.Errorf("store: use secret handle: %w", err)
	}
	h, err := t.GetSecretHandle(ctx, idHash)
	if err != nil {
		return nil, err
	}
	switch {
	case n == 1:
		return h, nil
	case h.UsedAt != nil:
		return h, fmt.Errorf("store: use secret handle: %w", store.ErrHandleUsed)
	default:
		return h, fmt.Errorf("store: use secret handle: %w", store.ErrHandleExpired)
	}
}

func (t *tx) PurgeSecretHandles(ctx context.Context, before time.Time) (int64, error) {
	if err := t.writable("purge secret handles"); err != nil {
		return 0, err
	}
	res, err := t.exec(ctx, t.s.d.Rebind(qPurgeHandles), before.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("store: purge secret handles: %w", err)
	}
	return res.RowsAffected()
}

const (
	qCurrentKEK = `SELECT kek_id FROM secret_kek WHERE id = 1`
	qSetKEK     = `INSERT INTO secret_kek (id, kek_id, updated_at) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET kek_id = excluded.kek_id, updated_at = excluded.updated_at`
)

func (t *tx) CurrentSecretKEK(ctx context.Context) (string, error) {
	var id string
	err := t.queryRow(ctx, qCurrentKEK).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: read the current key-encryption key id: %w", err)
	}
	return id, nil
}

func (t *tx) SetCurrentSecretKEK(ctx context.Context, id string) error {
	op := "record the current key-encryption key id"
	if err := t.writable(op); err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("store: %s: an id is required", op)
	}
	if _, err := t.exec(ctx, t.s.d.Rebind(qSetKEK), id, now().UnixNano()); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}
