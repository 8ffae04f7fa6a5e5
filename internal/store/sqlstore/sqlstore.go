// Package sqlstore implements store.Store on database/sql. It holds everything the
// SQLite and PostgreSQL backends share; they supply the driver, the migrations and a
// small Dialect describing what differs (placeholders, the write lock, error codes).
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/store"
)

// ErrReadOnly is returned by the write methods of a View transaction.
var ErrReadOnly = errors.New("read-only transaction")

// Options tune a store; the zero value is fine.
type Options struct {
	// Observe, if not nil, is called after every Update and View with the operation
	// ("update" or "view") and how long it took, waiting for the write lock included.
	// It must be safe for concurrent use (a Prometheus histogram's Observe is).
	Observe func(op string, d time.Duration)
}

// Dialect is what differs between the SQL backends.
type Dialect struct {
	// Name is the backend's name, for messages: "sqlite", "postgres".
	Name string
	// NumberedPlaceholders rewrites the ? placeholders of the shared queries to $1, $2 ...
	NumberedPlaceholders bool
	// WriteLock, if not empty, is executed first in every read-write transaction (and
	// in the migration transaction) so that writers are serialized.
	WriteLock string
	// UpdateTx and ViewTx are the options read-write and read-only transactions begin with.
	UpdateTx, ViewTx sql.TxOptions
	// Migrations holds the schema as NNNN_description.sql files, applied in order.
	Migrations fs.FS
	// PrepareStatements prepares the store's queries once per connection (for drivers
	// without their own statement cache: SQLite's parser is a large part of a lookup).
	PrepareStatements bool
	// IsUniqueViolation reports whether err is the driver's unique-constraint violation.
	IsUniqueViolation func(err error) bool
}

// Rebind rewrites the ? placeholders of q for the dialect. Question marks inside
// single-quoted literals are left alone.
func (d *Dialect) Rebind(q string) string {
	if !d.NumberedPlaceholders || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n, quoted := 0, false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			quoted = !quoted
			b.WriteByte(c)
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func (d *Dialect) isUniqueViolation(err error) bool {
	return err != nil && d.IsUniqueViolation != nil && d.IsUniqueViolation(err)
}

// Store implements store.Store on one or two database/sql pools.
type Store struct {
	write, read *sql.DB
	d           Dialect
	q           *queries
	observe     func(string, time.Duration)
	keyed       map[string]bool // kinds whose objects claim unique keys
	wstmts      map[string]*sql.Stmt
	rstmts      map[string]*sql.Stmt
	closeOnce   sync.Once
	closeErr    error
	keysCommits atomic.Int64 // committed transactions that changed keys (LocalKeysChanges)
	// chain, once KeyAuditChain was called, seals audit entries and anchors the head;
	// keyedFrom is its checkpoint's sequence.
	chain     atomic.Pointer[audit.Chain]
	keyedFrom atomic.Int64
	// committed is closed (and replaced) after a commit that added events or
	// changed objects (store.CommitNotifier).
	commitMu  sync.Mutex
	committed chan struct{}
}

var (
	_ store.Store          = (*Store)(nil)
	_ store.CommitNotifier = (*Store)(nil)
)

// New applies the dialect's pending migrations and returns a store. Read-write
// transactions run on write, read-only ones on read (nil: write too). The store owns
// the pools from then on: Close closes them. On error the caller closes them.
func New(ctx context.Context, write, read *sql.DB, d Dialect, opts Options) (*Store, error) {
	if read == nil {
		read = write
	}
	s := &Store{write: write, read: read, d: d, q: newQueries(&d), observe: opts.Observe, keyed: keyedKinds()}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	if d.PrepareStatements {
		var err error
		if s.wstmts, err = prepare(ctx, write, s.q.all()); err != nil {
			return nil, err
		}
		if s.rstmts, err = prepare(ctx, read, s.q.all()); err != nil {
			closeStmts(s.wstmts)
			return nil, err
		}
	}
	return s, nil
}

func prepare(ctx context.Context, db *sql.DB, queries []string) (map[string]*sql.Stmt, error) {
	m := make(map[string]*sql.Stmt, len(queries))
	for _, q := range queries {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			closeStmts(m)
			return nil, fmt.Errorf("store: prepare %q: %w", q, err)
		}
		m[q] = st
	}
	return m, nil
}

func closeStmts(m map[string]*sql.Stmt) {
	for _, st := range m {
		_ = st.Close()
	}
}

// Update runs fn in a read-write transaction; writers are serialized.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) (err error) {
	if s.observe != nil {
		defer func(start time.Time) { s.observe("update", time.Since(start)) }(time.Now())
	}
	return s.run(ctx, s.write, s.wstmts, &s.d.UpdateTx, true, fn)
}

// View runs fn in a read-only transaction.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) (err error) {
	if s.observe != nil {
		defer func(start time.Time) { s.observe("view", time.Since(start)) }(time.Now())
	}
	return s.run(ctx, s.read, s.rstmts, &s.d.ViewTx, false, fn)
}

func (s *Store) run(ctx context.Context, db *sql.DB, stmts map[string]*sql.Stmt, opts *sql.TxOptions, rw bool, fn func(store.Tx) error) error {
	what := "view"
	if rw {
		what = "update"
	}
	sqlTx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("store: begin %s transaction: %w", what, err)
	}
	done := false
	defer func() {
		if !done {
			_ = sqlTx.Rollback() // also on panic; the original error matters more
		}
	}()
	if rw && s.d.WriteLock != "" {
		if _, err := sqlTx.ExecContext(ctx, s.d.WriteLock); err != nil {
			return fmt.Errorf("store: take the write lock: %w", err)
		}
	}
	t := &tx{s: s, q: s.q, tx: sqlTx, stmts: stmts, rw: rw}
	if err := fn(t); err != nil {
		return err
	}
	done = true
	if !rw {
		// Nothing to keep; rolling back also ends a read-only snapshot cheaply.
		if err := sqlTx.Rollback(); err != nil {
			return fmt.Errorf("store: end view transaction: %w", err)
		}
		return nil
	}
	if err := sqlTx.Commit(); err != nil {
		if t.keysBumped {
			s.keysCommits.Add(1) // it may have committed: readers check the version
		}
		return fmt.Errorf("store: commit: %w", err)
	}
	if t.keysBumped {
		s.keysCommits.Add(1)
	}
	if t.logged {
		s.signalCommit()
	}
	if c := s.chain.Load(); c != nil && t.auditSeq > 0 {
		// After the commit, never inside the transaction: an anchor ahead of the
		// database would make an honest chain fail verification.
		c.Anchor(t.auditSeq, t.auditHash, s.keyedFrom.Load())
	}
	return nil
}

// Committed implements store.CommitNotifier.
func (s *Store) Committed() <-chan struct{} {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if s.committed == nil {
		s.committed = make(chan struct{})
	}
	return s.committed
}

func (s *Store) signalCommit() {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if s.committed != nil {
		close(s.committed)
		s.committed = nil // the next Committed makes a new one
	}
}

// Ping checks that the database answers. It uses the read pool, so that a health
// check does not queue behind a long write.
// LocalKeysChanges implements store.KeysNotifier: it counts this process's
// committed transactions that claimed or released unique keys.
func (s *Store) LocalKeysChanges() int64 { return s.keysCommits.Load() }

func (s *Store) Ping(ctx context.Context) error {
	if err := s.read.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping %s: %w", s.d.Name, err)
	}
	return nil
}

// Close closes the pools, after the audit head handed over last is anchored. It
// may be called more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if c := s.chain.Load(); c != nil {
			c.Flush()
		}
		closeStmts(s.wstmts)
		closeStmts(s.rstmts)
		err := s.write.Close()
		if s.read != s.write {
			err = errors.Join(err, s.read.Close())
		}
		if err != nil {
			s.closeErr = fmt.Errorf("store: close %s: %w", s.d.Name, err)
		}
	})
	return s.closeErr
}

// DB returns the read-write pool, for tests and tools (bulk loaders, diagnostics).
func (s *Store) DB() *sql.DB { return s.write }

// Rebind rewrites the ? placeholders of q for the store's dialect.
func (s *Store) Rebind(q string) string { return s.d.Rebind(q) }
