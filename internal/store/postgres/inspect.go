package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

// LatestSchemaVersion is the schema version this binary migrates a PostgreSQL
// database to.
func LatestSchemaVersion() int64 {
	v, err := sqlstore.LatestSchemaVersion(Dialect().Migrations)
	if err != nil {
		panic(err) // the embedded migrations are checked by the tests
	}
	return v
}

// OpenExisting connects to the database at url for tools that look at it (the
// doctor): nothing is migrated. The caller closes it.
func OpenExisting(ctx context.Context, url string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err) // pgx leaves the password out
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres database %q on %s: %w", cfg.Database, cfg.Host, err)
	}
	return db, nil
}

// SchemaVersion reads the schema version of the database db (0: no Kiln
// migrated it), changing nothing.
func SchemaVersion(ctx context.Context, db *sql.DB) (int64, error) {
	return sqlstore.AppliedSchemaVersion(ctx, db, `SELECT to_regclass($1) IS NOT NULL`)
}

// ServerTime is the database server's clock (SELECT now()), for comparing it
// with this host's.
func ServerTime(ctx context.Context, db *sql.DB) (time.Time, error) {
	var t time.Time
	if err := db.QueryRowContext(ctx, `SELECT now()`).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("read the database server's clock: %w", err)
	}
	return t, nil
}
