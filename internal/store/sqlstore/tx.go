package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// tx implements store.Tx on one database/sql transaction.
type tx struct {
	s     *Store
	q     *queries
	tx    *sql.Tx
	stmts map[string]*sql.Stmt // prepared statements of the transaction's pool, by query
	rw    bool
	// keysBumped: this transaction bumped the keys version already.
	keysBumped bool
	// auditSeq, auditHash: the newest audit entry this transaction appended, to
	// anchor after it commits.
	auditSeq  int64
	auditHash string
	// logged: this transaction added events or wrote objects (so changes), which
	// watches in this process are told of after the commit.
	logged bool
}

var _ store.Tx = (*tx)(nil)

// what names an operation on an object in errors: `create machine "web-1"`.
func what(op, kind, name string) string {
	return fmt.Sprintf("%s %s %q", op, strings.ToLower(kind), name)
}

// exec, query and queryRow run one of the store's queries, prepared if the dialect
// asks for it.
func (t *tx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := t.stmts[q]; st != nil {
		return t.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, q, args...)
}

func (t *tx) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := t.stmts[q]; st != nil {
		return t.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, q, args...)
}

func (t *tx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	if st := t.stmts[q]; st != nil {
		return t.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, q, args...)
}

// wrote notes a write of an object of kind: the change log's triggers record it
// (except leases), and watches are told after the commit.
func (t *tx) wrote(kind string) {
	if kind != store.UnloggedKind {
		t.logged = true
	}
}

func (t *tx) writable(op string) error {
	if !t.rw {
		return fmt.Errorf("store: %s: %w", op, ErrReadOnly)
	}
	return nil
}

// now is the time Kiln stamps on records: UTC, without a monotonic reading.
func now() time.Time { return time.Now().UTC() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// ---- objects ----------------------------------------------------------------

// scanner is *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

func scanObject(sc scanner, kind string) (*resource.Object, error) {
	var (
		labels, spec, status string
		annotations          sql.NullString
		rv, created, updated int64
		obj                  = &resource.Object{APIVersion: resource.APIVersion, Kind: kind}
	)
	if err := sc.Scan(&obj.Metadata.Name, &labels, &annotations, &spec, &status, &rv, &created, &updated); err != nil {
		return nil, err
	}
	var err error
	if obj.Metadata.Labels, err = decodeStringMap(labels); err != nil {
		return nil, fmt.Errorf("%s/%s: stored labels: %w", kind, obj.Metadata.Name, err)
	}
	if obj.Metadata.Annotations, err = decodeStringMap(annotations.String); err != nil {
		return nil, fmt.Errorf("%s/%s: stored annotations: %w", kind, obj.Metadata.Name, err)
	}
	if spec != "" {
		obj.Spec = json.RawMessage(spec)
	}
	if status != "" {
		obj.Status = json.RawMessage(status)
	}
	obj.Metadata.ResourceVersion = strconv.FormatInt(rv, 10)
	c, u := fromNanos(created), fromNanos(updated)
	obj.Metadata.CreatedAt, obj.Metadata.UpdatedAt = &c, &u
	return obj, nil
}

func (t *tx) Get(ctx context.Context, kind, name string) (*resource.Object, error) {
	obj, err := scanObject(t.queryRow(ctx, t.q.getObject, kind, name), kind)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", what("get", kind, name), err)
	}
	return obj, nil
}

// listBatch is how many rows List reads per query when a selector filters them.
const listBatch = 256

func (t *tx) List(ctx context.Context, kind string, opts store.ListOptions) ([]*resource.Object, string, error) {
	objs, next, err := t.list(ctx, kind, opts)
	if err != nil {
		return nil, "", fmt.Errorf("store: list %s: %w", strings.ToLower(kind), err)
	}
	return objs, next, nil
}

func (t *tx) list(ctx context.Context, kind string, opts store.ListOptions) ([]*resource.Object, string, error) {
	limit, after, sel := opts.Limit, opts.Continue, opts.Selector
	var out []*resource.Object
	if limit <= 0 {
		rows, err := t.query(ctx, t.q.listAll, kind, after)
		if err != nil {
			return nil, "", err
		}
		defer rows.Close()
		for rows.Next() {
			obj, err := scanObject(rows, kind)
			if err != nil {
				return nil, "", err
			}
			if sel.Matches(obj.Metadata.Labels) {
				out = append(out, obj)
			}
		}
		return out, "", rows.Err()
	}
	// Read one match more than asked to know whether another page exists. A selector
	// may reject rows: keep reading (in growing batches) until the page is full.
	batch := limit + 1
	if !sel.Empty() {
		batch = max(batch, listBatch)
	}
	for {
		more, n, err := t.listPage(ctx, kind, &after, batch, limit, sel, &out)
		switch {
		case err != nil:
			return nil, "", err
		case more:
			return out, out[len(out)-1].Metadata.Name, nil
		case n < batch:
			return out, "", nil // the end
		}
		batch = max(batch, min(batch*2, 16*listBatch))
	}
}

// listPage reads up to batch rows after *after into *out, stopping when a match
// beyond limit shows that more exist. It reports that, and how many rows it read.
func (t *tx) listPage(ctx context.Context, kind string, after *string, batch, limit int, sel resource.Selector, out *[]*resource.Object) (more bool, n int, err error) {
	rows, err := t.query(ctx, t.q.listPage, kind, *after, int64(batch))
	if err != nil {
		return false, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		n++
		obj, err := scanObject(rows, kind)
		if err != nil {
			return false, n, err
		}
		*after = obj.Metadata.Name
		if !sel.Matches(obj.Metadata.Labels) {
			continue
		}
		if len(*out) == limit {
			return true, n, nil
		}
		*out = append(*out, obj)
	}
	return false, n, rows.Err()
}

func (t *tx) LookupKey(ctx context.Context, kind, key string) (*resource.Object, error) {
	obj, err := scanObject(t.queryRow(ctx, t.q.lookupKey, kind, key), kind)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: look up %s by %s: %w", strings.ToLower(kind), key, err)
	}
	return obj, nil
}

func (t *tx) ListKeys(ctx context.Context, kind, prefix string) ([]string, error) {
	rows, err := t.query(ctx, t.q.listKeys, kind, prefix, prefix+"\U0010FFFF")
	if err != nil {
		return nil, fmt.Errorf("store: list %s keys: %w", strings.ToLower(kind), err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("store: list %s keys: %w", strings.ToLower(kind), err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list %s keys: %w", strings.ToLower(kind), err)
	}
	return keys, nil
}

func (t *tx) KeysVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := t.queryRow(ctx, t.q.keysVersion).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: read the keys version: %w", err)
	}
	return v, nil
}

// keysChanged bumps the keys version, once per transaction.
func (t *tx) keysChanged(ctx context.Context) error {
	if t.keysBumped {
		return nil
	}
	if _, err := t.exec(ctx, t.q.bumpKeysVersion); err != nil {
		return fmt.Errorf("bump the keys version: %w", err)
	}
	t.keysBumped = true
	return nil
}

// encoded is an object's columns.
type encoded struct{ labels, annotations, spec, status string }

func encode(obj *resource.Object) (encoded, error) {
	var e encoded
	var err error
	if e.labels, err = encodeStringMap(obj.Metadata.Labels); err != nil {
		return e, fmt.Errorf("encode labels: %w", err)
	}
	if e.annotations, err = encodeStringMap(obj.Metadata.Annotations); err != nil {
		return e, fmt.Errorf("encode annotations: %w", err)
	}
	if len(obj.Spec) > 0 && !json.Valid(obj.Spec) {
		return e, fmt.Errorf("spec is not valid JSON")
	}
	if len(obj.Status) > 0 && !json.Valid(obj.Status) {
		return e, fmt.Errorf("status is not valid JSON")
	}
	e.spec, e.status = string(obj.Spec), string(obj.Status)
	return e, nil
}

// keyedKinds returns the kinds whose objects claim unique keys.
func keyedKinds() map[string]bool {
	m := map[string]bool{}
	for _, k := range resource.Kinds() {
		if _, ok := reflect.New(k.SpecType).Interface().(resource.UniqueKeyer); ok {
			m[k.Name] = true
		}
	}
	return m
}

// uniqueKeys returns the object's unique keys, sorted and without duplicates.
func (t *tx) uniqueKeys(obj *resource.Object) ([]string, error) {
	if len(obj.Spec) == 0 || !t.s.keyed[obj.Kind] {
		return nil, nil
	}
	keys, err := resource.UniqueKeys(obj)
	if err != nil {
		return nil, fmt.Errorf("read unique keys: %w", err)
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// claimKeys inserts keys for an object. On a conflict it releases the keys it
// claimed and returns a *store.KeyConflictError.
func (t *tx) claimKeys(ctx context.Context, kind, name string, keys []string) error {
	for i, k := range keys {
		res, err := t.exec(ctx, t.q.insertKey, kind, k, name)
		if err != nil {
			if t.s.d.isUniqueViolation(err) {
				err = &store.KeyConflictError{Key: k, Kind: kind, Owner: "(unknown)"}
			}
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			if err := t.keysChanged(ctx); err != nil {
				return err
			}
			continue
		}
		var owner string
		if err := t.queryRow(ctx, t.q.keyOwner, kind, k).Scan(&owner); err != nil {
			return fmt.Errorf("find the owner of %s: %w", k, err)
		}
		if err := t.releaseKeys(ctx, kind, name, keys[:i]); err != nil {
			return err
		}
		return &store.KeyConflictError{Key: k, Kind: kind, Owner: owner}
	}
	return nil
}

func (t *tx) releaseKeys(ctx context.Context, kind, name string, keys []string) error {
	for _, k := range keys {
		if _, err := t.exec(ctx, t.q.deleteKey, kind, k, name); err != nil {
			return fmt.Errorf("release %s: %w", k, err)
		}
		if err := t.keysChanged(ctx); err != nil {
			return err
		}
	}
	return nil
}

// insert runs an INSERT that must add one row: a unique violation, or no row added
// (ON CONFLICT DO NOTHING), is store.ErrExists. The transaction stays usable.
func (t *tx) insert(ctx context.Context, q string, args ...any) error {
	res, err := t.exec(ctx, q, args...)
	if t.s.d.isUniqueViolation(err) {
		return store.ErrExists
	}
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return store.ErrExists
	}
	return nil
}

func (t *tx) Create(ctx context.Context, obj *resource.Object) error {
	op := what("create", obj.Kind, obj.Metadata.Name)
	if err := t.writable(op); err != nil {
		return err
	}
	t.wrote(obj.Kind)
	if err := t.create(ctx, obj); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

// createBatchRows bounds the rows of one multi-row INSERT (8 parameters each,
// far below SQLite's and PostgreSQL's limits on parameters).
const createBatchRows = 256

func (t *tx) CreateBatch(ctx context.Context, objs []*resource.Object) ([]bool, error) {
	if err := t.writable("create objects"); err != nil {
		return nil, err
	}
	for _, o := range objs {
		t.wrote(o.Kind)
	}
	taken := make([]bool, len(objs))
	type key struct{ kind, name string }
	seen := make(map[key]bool, len(objs))
	var rows []int // indexes of the objects a multi-row INSERT stores
	for i, obj := range objs {
		k := key{obj.Kind, obj.Metadata.Name}
		if k.kind == "" || k.name == "" {
			return nil, fmt.Errorf("store: %s: kind and name are required", what("create", k.kind, k.name))
		}
		if seen[k] {
			taken[i] = true
			continue
		}
		seen[k] = true
		if t.s.keyed[obj.Kind] && len(obj.Spec) > 0 {
			// Objects that claim unique keys go one by one (the keys are checked per object).
			if err := t.Create(ctx, obj); errors.Is(err, store.ErrExists) {
				taken[i] = true
			} else if err != nil {
				return nil, err
			}
			continue
		}
		rows = append(rows, i)
	}
	for len(rows) > 0 {
		n := min(len(rows), createBatchRows)
		if err := t.insertRows(ctx, objs, rows[:n], taken); err != nil {
			return nil, err
		}
		rows = rows[n:]
	}
	return taken, nil
}

// insertRows stores objs[rows] in one INSERT; those whose names are taken are
// marked in taken.
func (t *tx) insertRows(ctx context.Context, objs []*resource.Object, rows []int, taken []bool) error {
	ts := now()
	var q strings.Builder
	q.WriteString(`INSERT INTO objects (kind, name, labels, annotations, spec, status, resource_version, created_at, updated_at) VALUES `)
	args := make([]any, 0, 8*len(rows))
	for j, i := range rows {
		obj := objs[i]
		enc, err := encode(obj)
		if err != nil {
			return fmt.Errorf("store: %s: %w", what("create", obj.Kind, obj.Metadata.Name), err)
		}
		if j > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, ?, ?, ?, 1, ?, ?)")
		args = append(args, obj.Kind, obj.Metadata.Name, enc.labels, enc.annotations, enc.spec, enc.status, ts.UnixNano(), ts.UnixNano())
	}
	q.WriteString(` ON CONFLICT (kind, name) DO NOTHING RETURNING kind, name`)
	res, err := t.tx.QueryContext(ctx, t.s.d.Rebind(q.String()), args...)
	if err != nil {
		return fmt.Errorf("store: create %d objects: %w", len(rows), err)
	}
	defer res.Close()
	inserted := make(map[[2]string]bool, len(rows))
	for res.Next() {
		var k [2]string
		if err := res.Scan(&k[0], &k[1]); err != nil {
			return fmt.Errorf("store: create %d objects: %w", len(rows), err)
		}
		inserted[k] = true
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("store: create %d objects: %w", len(rows), err)
	}
	for _, i := range rows {
		obj := objs[i]
		if !inserted[[2]string{obj.Kind, obj.Metadata.Name}] {
			taken[i] = true
			continue
		}
		obj.Metadata.ResourceVersion = "1"
		obj.Metadata.CreatedAt, obj.Metadata.UpdatedAt = ptr(ts), ptr(ts)
	}
	return nil
}

func (t *tx) create(ctx context.Context, obj *resource.Object) error {
	kind, name := obj.Kind, obj.Metadata.Name
	if kind == "" || name == "" {
		return fmt.Errorf("kind and name are required")
	}
	enc, err := encode(obj)
	if err != nil {
		return err
	}
	keys, err := t.uniqueKeys(obj)
	if err != nil {
		return err
	}
	ts := now()
	if err := t.insert(ctx, t.q.insertObject, kind, name, enc.labels, enc.annotations, enc.spec, enc.status, ts.UnixNano(), ts.UnixNano()); err != nil {
		return err
	}
	if err := t.claimKeys(ctx, kind, name, keys); err != nil {
		// Undo the insert so that a caller handling the error keeps a clean transaction.
		if _, derr := t.exec(ctx, t.q.deleteObject, kind, name); derr != nil {
			return errors.Join(err, fmt.Errorf("undo the insert: %w", derr))
		}
		return err
	}
	obj.Metadata.ResourceVersion = "1"
	obj.Metadata.CreatedAt, obj.Metadata.UpdatedAt = &ts, ptr(ts)
	return nil
}

func ptr[T any](v T) *T { return &v }

func (t *tx) Update(ctx context.Context, obj *resource.Object) error {
	op := what("update", obj.Kind, obj.Metadata.Name)
	if err := t.writable(op); err != nil {
		return err
	}
	t.wrote(obj.Kind)
	if err := t.update(ctx, obj); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

// storedVersion returns an object's resourceVersion and creation time.
func (t *tx) storedVersion(ctx context.Context, kind, name string) (rv, created int64, err error) {
	err = t.queryRow(ctx, t.q.objectVersion, kind, name).Scan(&rv, &created)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	return rv, created, err
}

func (t *tx) update(ctx context.Context, obj *resource.Object) error {
	kind, name := obj.Kind, obj.Metadata.Name
	rv, created, err := t.storedVersion(ctx, kind, name)
	if err != nil {
		return err
	}
	if obj.Metadata.ResourceVersion != strconv.FormatInt(rv, 10) {
		return fmt.Errorf("%w: resourceVersion is %d, not %q", store.ErrConflict, rv, obj.Metadata.ResourceVersion)
	}
	enc, err := encode(obj)
	if err != nil {
		return err
	}
	var added, removed []string
	if t.s.keyed[kind] {
		keys, err := t.uniqueKeys(obj)
		if err != nil {
			return err
		}
		old, err := t.keysOf(ctx, kind, name)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if !slices.Contains(old, k) {
				added = append(added, k)
			}
		}
		for _, k := range old {
			if !slices.Contains(keys, k) {
				removed = append(removed, k)
			}
		}
		if err := t.claimKeys(ctx, kind, name, added); err != nil {
			return err
		}
	}
	ts := now()
	res, err := t.exec(ctx, t.q.updateObject, enc.labels, enc.annotations, enc.spec, enc.status, rv+1, ts.UnixNano(), kind, name, rv)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		// Writers are serialized, so this means the write lock is not working.
		return fmt.Errorf("%w: the object changed during the update", store.ErrConflict)
	}
	if err := t.releaseKeys(ctx, kind, name, removed); err != nil {
		return err
	}
	obj.Metadata.ResourceVersion = strconv.FormatInt(rv+1, 10)
	obj.Metadata.CreatedAt, obj.Metadata.UpdatedAt = ptr(fromNanos(created)), &ts
	return nil
}

func (t *tx) keysOf(ctx context.Context, kind, name string) ([]string, error) {
	rows, err := t.query(ctx, t.q.keysOf, kind, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

func (t *tx) Delete(ctx context.Context, kind, name, resourceVersion string) error {
	op := what("delete", kind, name)
	if err := t.writable(op); err != nil {
		return err
	}
	t.wrote(kind)
	if err := t.delete(ctx, kind, name, resourceVersion); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

func (t *tx) delete(ctx context.Context, kind, name, resourceVersion string) error {
	var res sql.Result
	var err error
	if resourceVersion == "" {
		res, err = t.exec(ctx, t.q.deleteObject, kind, name)
	} else {
		rv, perr := strconv.ParseInt(resourceVersion, 10, 64)
		if perr != nil || strconv.FormatInt(rv, 10) != resourceVersion {
			if _, _, err := t.storedVersion(ctx, kind, name); err != nil {
				return err
			}
			return fmt.Errorf("%w: resourceVersion %q is not one Kiln wrote", store.ErrConflict, resourceVersion)
		}
		res, err = t.exec(ctx, t.q.deleteObjectAt, kind, name, rv)
	}
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err == nil && n == 1 && t.s.keyed[kind] {
		return t.keysChanged(ctx) // the object's keys went with it (ON DELETE CASCADE)
	}
	if err != nil || n == 1 {
		return err
	}
	rv, _, err := t.storedVersion(ctx, kind, name)
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: resourceVersion is %d, not %q", store.ErrConflict, rv, resourceVersion)
}

// ---- audit ------------------------------------------------------------------

func (t *tx) AppendAudit(ctx context.Context, e *audit.Entry) error {
	if err := t.writable("append audit entry"); err != nil {
		return err
	}
	if err := t.appendAudit(ctx, e); err != nil {
		return fmt.Errorf("store: append audit entry (%s %s %q): %w", e.Action, strings.ToLower(e.Kind), e.Name, err)
	}
	return nil
}

func (t *tx) appendAudit(ctx context.Context, e *audit.Entry) error {
	seq, hash, err := t.auditHead(ctx)
	if err != nil {
		return err
	}
	if e.Time.IsZero() {
		e.Time = now()
	}
	e.Time = e.Time.UTC().Round(0)
	if c := t.s.chain.Load(); c != nil {
		c.Seal(e, seq, hash)
	} else {
		audit.Seal(e, seq, hash)
	}
	_, err = t.exec(ctx, t.q.insertAudit, e.Seq, e.Time.UnixNano(), e.Actor, e.Action, e.Kind, e.Name, e.Summary, e.PrevHash, e.Hash)
	if t.s.d.isUniqueViolation(err) {
		return fmt.Errorf("%w: audit entry %d exists: writers are not serialized", store.ErrConflict, e.Seq)
	}
	if err != nil {
		return err
	}
	res, err := t.exec(ctx, t.q.setAuditHead, e.Seq, e.Hash, seq)
	if err != nil {
		return fmt.Errorf("record the audit head: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return fmt.Errorf("%w: the audit head moved: writers are not serialized", store.ErrConflict)
	}
	t.auditSeq, t.auditHash = e.Seq, e.Hash
	return nil
}

func (t *tx) auditHead(ctx context.Context) (seq int64, hash string, err error) {
	if err := t.queryRow(ctx, t.q.auditHead).Scan(&seq, &hash); err != nil {
		return 0, "", fmt.Errorf("read the audit head: %w", err)
	}
	return seq, hash, nil
}

func (t *tx) AuditHead(ctx context.Context) (int64, string, error) {
	seq, hash, err := t.auditHead(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("store: %w", err)
	}
	return seq, hash, nil
}

// ListAudit returns up to limit entries (limit <= 0: all) with Seq > after, in order.
func (t *tx) ListAudit(ctx context.Context, after int64, limit int) ([]audit.Entry, error) {
	var rows *sql.Rows
	var err error
	if limit > 0 {
		rows, err = t.query(ctx, t.q.listAudit, after, int64(limit))
	} else {
		rows, err = t.query(ctx, t.q.allAudit, after)
	}
	if err != nil {
		return nil, fmt.Errorf("store: list audit entries: %w", err)
	}
	defer rows.Close()
	var out []audit.Entry
	for rows.Next() {
		var e audit.Entry
		var ts int64
		if err := rows.Scan(&e.Seq, &ts, &e.Actor, &e.Action, &e.Kind, &e.Name, &e.Summary, &e.PrevHash, &e.Hash); err != nil {
			return nil, fmt.Errorf("store: list audit entries: %w", err)
		}
		e.Time = fromNanos(ts)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list audit entries: %w", err)
	}
	return out, nil
}

// ---- events -----------------------------------------------------------------

// AddEvent stores an event and sets its ID (and its time, if zero). Type and message
// are display text: invalid UTF-8 and NUL bytes (which PostgreSQL cannot store) are
// replaced with U+FFFD on both backends.
func (t *tx) AddEvent(ctx context.Context, e *store.Event) error {
	op := fmt.Sprintf("add event to machine %q", e.Machine)
	if err := t.writable(op); err != nil {
		return err
	}
	e.Type, e.Message = displayText(e.Type), displayText(e.Message)
	if e.Time.IsZero() {
		e.Time = now()
	}
	e.Time = e.Time.UTC().Round(0)
	if err := t.queryRow(ctx, t.q.insertEvent, e.Machine, e.Time.UnixNano(), e.Type, e.Message).Scan(&e.ID); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	t.logged = true
	return nil
}

// displayText makes s storable as text on every backend.
func displayText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	return s
}

// ListEvents returns a machine's newest limit events (limit <= 0: all), oldest first.
func (t *tx) ListEvents(ctx context.Context, machine string, limit int) ([]store.Event, error) {
	var rows *sql.Rows
	var err error
	if limit > 0 {
		rows, err = t.query(ctx, t.q.listEvents, machine, int64(limit))
	} else {
		rows, err = t.query(ctx, t.q.allEvents, machine)
	}
	if err != nil {
		return nil, fmt.Errorf("store: list events of machine %q: %w", machine, err)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		var e store.Event
		var ts int64
		if err := rows.Scan(&e.ID, &e.Machine, &ts, &e.Type, &e.Message); err != nil {
			return nil, fmt.Errorf("store: list events of machine %q: %w", machine, err)
		}
		e.Time = fromNanos(ts)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list events of machine %q: %w", machine, err)
	}
	slices.Reverse(out) // newest first from the query; oldest first for the caller
	return out, nil
}

// EventsAfter returns up to limit events with ID > after, oldest first.
func (t *tx) EventsAfter(ctx context.Context, machine string, after int64, limit int) ([]store.Event, error) {
	var rows *sql.Rows
	var err error
	if machine == "" {
		rows, err = t.query(ctx, t.q.eventsAfter, after, int64(max(limit, 1)))
	} else {
		rows, err = t.query(ctx, t.q.machineEventsAfter, machine, after, int64(max(limit, 1)))
	}
	if err != nil {
		return nil, fmt.Errorf("store: list events after %d: %w", after, err)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		var e store.Event
		var ts int64
		if err := rows.Scan(&e.ID, &e.Machine, &ts, &e.Type, &e.Message); err != nil {
			return nil, fmt.Errorf("store: list events after %d: %w", after, err)
		}
		e.Time = fromNanos(ts)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list events after %d: %w", after, err)
	}
	return out, nil
}

// prefixScanner scans leading columns into pre, the rest into what Scan is given.
type prefixScanner struct {
	sc  scanner
	pre []any
}

func (p prefixScanner) Scan(dest ...any) error {
	return p.sc.Scan(append(slices.Clip(p.pre), dest...)...)
}

// ChangesAfter returns up to limit changes with Seq > after, in order.
func (t *tx) ChangesAfter(ctx context.Context, kind string, after int64, limit int) ([]store.Change, error) {
	var rows *sql.Rows
	var err error
	if kind == "" {
		rows, err = t.query(ctx, t.q.changesAfter, after, int64(max(limit, 1)))
	} else {
		rows, err = t.query(ctx, t.q.kindChangesAfter, kind, after, int64(max(limit, 1)))
	}
	if err != nil {
		return nil, fmt.Errorf("store: list changes after %d: %w", after, err)
	}
	defer rows.Close()
	var out []store.Change
	for rows.Next() {
		var c store.Change
		var k string
		obj, err := scanObject(prefixScanner{rows, []any{&c.Seq, &c.Type, &k}}, kind)
		if err != nil {
			return nil, fmt.Errorf("store: list changes after %d: %w", after, err)
		}
		obj.Kind = k
		c.Object = obj
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list changes after %d: %w", after, err)
	}
	return out, nil
}

// StreamMarks returns the heads and floors of the event and change logs.
func (t *tx) StreamMarks(ctx context.Context) (store.StreamMarks, error) {
	var m store.StreamMarks
	if err := t.queryRow(ctx, t.q.streamMarks).Scan(&m.EventHead, &m.EventFloor, &m.ChangeHead, &m.ChangeFloor); err != nil {
		return m, fmt.Errorf("store: read the event and change logs' marks: %w", err)
	}
	// Retention may have removed the newest rows too (every event aged out).
	m.EventHead, m.ChangeHead = max(m.EventHead, m.EventFloor), max(m.ChangeHead, m.ChangeFloor)
	return m, nil
}

// ---- API tokens -------------------------------------------------------------

func (t *tx) CreateAPIToken(ctx context.Context, tok *store.APIToken) error {
	op := fmt.Sprintf("create API token %q", tok.ID)
	if err := t.writable(op); err != nil {
		return err
	}
	if tok.ID == "" {
		return fmt.Errorf("store: %s: an id is required", op)
	}
	if tok.CreatedAt.IsZero() {
		tok.CreatedAt = now()
	}
	tok.CreatedAt = tok.CreatedAt.UTC().Round(0)
	var revoked sql.NullInt64
	if tok.RevokedAt != nil {
		revoked = sql.NullInt64{Int64: tok.RevokedAt.UnixNano(), Valid: true}
		tok.RevokedAt = ptr(tok.RevokedAt.UTC().Round(0))
	}
	if err := t.insert(ctx, t.q.insertToken, tok.ID, tok.Name, tok.Role, tok.Hash, tok.CreatedAt.UnixNano(), revoked); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

func scanToken(sc scanner) (*store.APIToken, error) {
	var tok store.APIToken
	var created int64
	var revoked sql.NullInt64
	if err := sc.Scan(&tok.ID, &tok.Name, &tok.Role, &tok.Hash, &created, &revoked); err != nil {
		return nil, err
	}
	tok.CreatedAt = fromNanos(created)
	if revoked.Valid {
		tok.RevokedAt = ptr(fromNanos(revoked.Int64))
	}
	return &tok, nil
}

func (t *tx) GetAPIToken(ctx context.Context, id string) (*store.APIToken, error) {
	tok, err := scanToken(t.queryRow(ctx, t.q.getToken, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: get API token %q: %w", id, err)
	}
	return tok, nil
}

func (t *tx) ListAPITokens(ctx context.Context) ([]store.APIToken, error) {
	rows, err := t.query(ctx, t.q.listTokens)
	if err != nil {
		return nil, fmt.Errorf("store: list API tokens: %w", err)
	}
	defer rows.Close()
	var out []store.APIToken
	for rows.Next() {
		tok, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list API tokens: %w", err)
		}
		out = append(out, *tok)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list API tokens: %w", err)
	}
	return out, nil
}

// RevokeAPIToken marks a token revoked; revoking it again keeps the first time.
func (t *tx) RevokeAPIToken(ctx context.Context, id string, at time.Time) error {
	op := fmt.Sprintf("revoke API token %q", id)
	if err := t.writable(op); err != nil {
		return err
	}
	if at.IsZero() {
		at = now()
	}
	res, err := t.exec(ctx, t.q.revokeToken, at.UnixNano(), id)
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
