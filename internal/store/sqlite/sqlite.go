// Package sqlite is Kiln's embedded store: one SQLite database file (kiln.db) in the
// data directory, through the pure-Go modernc.org/sqlite driver.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

// FileName is the database file in the data directory.
const FileName = "kiln.db"

// maxReaders bounds the read-only connections (each has its own page cache).
const maxReaders = 8

//go:embed migrations/*.sql
var migrations embed.FS

// Dialect returns the SQLite dialect.
func Dialect() sqlstore.Dialect {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	return sqlstore.Dialect{
		Name:              "sqlite",
		UpdateTx:          sql.TxOptions{},               // BEGIN IMMEDIATE, from the DSN's _txlock
		ViewTx:            sql.TxOptions{ReadOnly: true}, // a deferred BEGIN on a query_only connection
		Migrations:        sub,
		PrepareStatements: true,
		IsUniqueViolation: IsUniqueViolation,
	}
}

// IsUniqueViolation reports whether err is a SQLite UNIQUE or PRIMARY KEY violation.
func IsUniqueViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}

// Open opens (creating it if needed) the store in dataDir/kiln.db and applies pending
// migrations. Writers share one connection and start with BEGIN IMMEDIATE, so they
// are serialized; readers use their own read-only connections (WAL mode lets them
// run alongside the writer).
func Open(ctx context.Context, dataDir string, opts sqlstore.Options) (store.Store, error) {
	if dataDir == "" {
		return nil, fmt.Errorf("store: open sqlite: no data directory")
	}
	if strings.ContainsAny(dataDir, "?#") {
		return nil, fmt.Errorf("store: open sqlite: data directory %q: '?' and '#' are not supported in the path", dataDir)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("store: open sqlite: create data directory: %w", err)
	}
	path := filepath.Join(dataDir, FileName)
	const common = "_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_pragma=mmap_size(268435456)"
	write, err := sql.Open("sqlite", path+"?"+common+"&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	// One writer connection: writers queue in database/sql instead of polling the
	// SQLite lock. The connection is kept open for as long as the store.
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxIdleTime(0)
	write.SetConnMaxLifetime(0)
	if err := write.PingContext(ctx); err != nil {
		write.Close()
		return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	read, err := sql.Open("sqlite", path+"?"+common+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	read.SetMaxOpenConns(maxReaders)
	read.SetMaxIdleConns(maxReaders)
	s, err := sqlstore.New(ctx, write, read, Dialect(), opts)
	if err != nil {
		write.Close()
		read.Close()
		return nil, fmt.Errorf("%w (database %s)", err, path)
	}
	return s, nil
}
