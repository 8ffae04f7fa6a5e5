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
	// SQLite's unix VFS creates the -wal and -shm files with the database file's
	// permissions, so creating kiln.db 0600 ourselves (SQLite's own default is
	// 0644 less the umask) keeps all three private; an existing kiln.db is made
	// 0600 too. This, rather than the process umask, because the umask is
	// process-wide and Open is also used by tests and tools in other processes.
	if err := createPrivate(path); err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
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
	// WAL mode is on now, so -wal and -shm exist: checked in case they were left
	// by an earlier, more permissive run.
	for _, f := range []string{path + "-wal", path + "-shm"} {
		if err := chmodPrivate(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			write.Close()
			return nil, fmt.Errorf("store: open sqlite: %w", err)
		}
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

// createPrivate creates the database file with mode 0600 if it does not exist
// (an empty file is an empty SQLite database), else makes it 0600.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return chmodPrivate(path)
}

// chmodPrivate removes group and other permissions from path.
func chmodPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o077 == 0 {
		return nil
	}
	if err := os.Chmod(path, st.Mode().Perm()&0o600); err != nil {
		return fmt.Errorf("make %s private (mode %o): %w", path, st.Mode().Perm(), err)
	}
	return nil
}
