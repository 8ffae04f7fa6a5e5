package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

// tableExists is the dialect's query for sqlstore.AppliedSchemaVersion.
const tableExists = `SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?`

// LatestSchemaVersion is the schema version this binary migrates a SQLite
// database to.
func LatestSchemaVersion() int64 {
	v, err := sqlstore.LatestSchemaVersion(Dialect().Migrations)
	if err != nil {
		panic(err) // the embedded migrations are checked by the tests
	}
	return v
}

// OpenExisting opens the database file at path for tools that look at it
// beside a running kiln serve (backup, doctor): it is never created, never
// migrated, and the connection is query-only, so nothing the tool runs can
// change it. VACUUM INTO still works: it writes only its target file.
func OpenExisting(ctx context.Context, path string) (*sql.DB, error) {
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open sqlite %s: '?' and '#' are not supported in the path", path)
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("open sqlite: %s does not exist (no kiln serve has run with this data dir?): %w", path, err)
	case err != nil:
		return nil, fmt.Errorf("open sqlite: %w", err)
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("open sqlite: %s is not a regular file", path)
	}
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return db, nil
}

// SchemaVersion reads the schema version of the open database db (0: a
// database no Kiln migrated), changing nothing.
func SchemaVersion(ctx context.Context, db *sql.DB) (int64, error) {
	return sqlstore.AppliedSchemaVersion(ctx, db, tableExists)
}

// QuickCheck runs SQLite's PRAGMA quick_check on db: nil when the database's
// pages, records and indexes' coverage are consistent, else an error listing
// (the first few) problems SQLite found.
func QuickCheck(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, `PRAGMA quick_check(10)`)
	if err != nil {
		return fmt.Errorf("run quick_check: %w", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("read quick_check: %w", err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read quick_check: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("quick_check found: %s", strings.Join(problems, "; "))
	}
	return nil
}

// Snapshot writes a consistent copy of the database file at path, as of one
// moment, to the new file dest (VACUUM INTO: one read transaction, so a kiln
// serve writing meanwhile is neither stopped nor seen half-way). The source is
// opened read-only (mode=ro): VACUUM INTO writes only its target. dest must
// not exist; it is created 0600, like kiln.db.
func Snapshot(ctx context.Context, path, dest string) error {
	if strings.ContainsAny(path, "?#") {
		return fmt.Errorf("snapshot %s: '?' and '#' are not supported in the path", path)
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("snapshot the database: %w", err)
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("snapshot the database to %s: %w", dest, err)
	}
	// VACUUM INTO refuses an existing non-empty file; an empty one made 0600
	// here keeps the copy private (SQLite would create it 0644 less the umask).
	f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("snapshot the database: %w", err)
	}
	f.Close()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		os.Remove(abs)
		return fmt.Errorf("snapshot: open %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, abs); err != nil {
		os.Remove(abs)
		return fmt.Errorf("snapshot %s to %s: %w", path, abs, err)
	}
	return nil
}
