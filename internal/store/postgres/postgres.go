// Package postgres is Kiln's store for several replicas: PostgreSQL through pgx's
// database/sql driver. Writers are serialized across replicas by a transaction-scoped
// advisory lock, which the audit hash chain needs.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

// WriteLockKey is the pg_advisory_xact_lock key every read-write transaction takes
// first: "kiln" in ASCII, then 1.
const WriteLockKey int64 = 0x6b696c6e_00000001

// Pool sizes: the server's connections per replica. All of them may stay idle (for
// up to ConnMaxIdleTime): with fewer, a load that uses more than the idle ones closes
// and reopens connections all the time, and each new one costs PostgreSQL a backend
// process (at 256 concurrent enrollments that doubled PostgreSQL's CPU per
// enrollment, BENCHMARKS.md).
const (
	maxOpenConns = 32
	maxIdleConns = maxOpenConns
)

//go:embed migrations/*.sql
var migrations embed.FS

// Dialect returns the PostgreSQL dialect.
func Dialect() sqlstore.Dialect {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	return sqlstore.Dialect{
		Name:                 "postgres",
		NumberedPlaceholders: true,
		WriteLock:            fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", WriteLockKey),
		// Read committed: every statement after the lock sees what earlier writers committed.
		UpdateTx: sql.TxOptions{Isolation: sql.LevelReadCommitted},
		// One snapshot for the whole view.
		ViewTx:            sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
		Migrations:        sub,
		IsUniqueViolation: IsUniqueViolation,
	}
}

// IsUniqueViolation reports whether err is PostgreSQL's unique_violation (23505).
func IsUniqueViolation(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == "23505"
}

// Open connects to the database at url (postgres://...) and applies pending
// migrations.
func Open(ctx context.Context, url string, opts sqlstore.Options) (store.Store, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", err) // pgx leaves the password out
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxIdleConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open postgres database %q on %s: %w", cfg.Database, cfg.Host, err)
	}
	s, err := sqlstore.New(ctx, db, nil, Dialect(), opts)
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}
