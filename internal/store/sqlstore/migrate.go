package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// SchemaTooNewError is a database whose schema a newer Kiln migrated: this binary
// does not know its tables, so it must not write to it (a downgrade).
type SchemaTooNewError struct {
	Database int64 // the newest migration applied to the database
	Binary   int64 // the newest migration this binary has
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("the database is at schema version %d, newer than this Kiln's %d (a downgrade is not supported): "+
		"run the Kiln version that wrote it or a newer one, or restore a backup made with a Kiln at schema version %d or older", e.Database, e.Binary, e.Binary)
}

// LatestSchemaVersion is the version of the newest migration in fsys: the schema
// version this binary migrates a database to.
func LatestSchemaVersion(fsys fs.FS) (int64, error) {
	ms, err := loadMigrations(fsys)
	if err != nil {
		return 0, err
	}
	return ms[len(ms)-1].version, nil
}

// AppliedSchemaVersion reads the newest migration recorded in a database's
// schema_migrations table, changing nothing; a database without the table (new,
// empty) is at version 0. tableExists is the dialect's query for whether a table
// exists, taking its name as the one parameter and returning one row with a
// boolean (or 0/1).
func AppliedSchemaVersion(ctx context.Context, db *sql.DB, tableExists string) (int64, error) {
	var exists bool
	if err := db.QueryRowContext(ctx, tableExists, "schema_migrations").Scan(&exists); err != nil {
		return 0, fmt.Errorf("look for the schema_migrations table: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read the schema version: %w", err)
	}
	return v.Int64, nil
}

// migration is one NNNN_description.sql file.
type migration struct {
	version int64
	name    string
	sql     string
}

func loadMigrations(fsys fs.FS) ([]migration, error) {
	if fsys == nil {
		return nil, fmt.Errorf("no migrations")
	}
	files, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int64]string{}
	for _, f := range files {
		base := strings.TrimSuffix(path.Base(f), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name is not NNNN_description.sql", f)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version %d", other, f, v)
		}
		seen[v] = f
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations")
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrate applies the pending migrations in one transaction, under the write lock so
// that replicas starting together do not race.
func (s *Store) migrate(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("store: migrate %s schema: %w", s.d.Name, err)
		}
	}()
	ms, err := loadMigrations(s.d.Migrations)
	if err != nil {
		return err
	}
	tx, err := s.write.BeginTx(ctx, &s.d.UpdateTx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if s.d.WriteLock != "" {
		if _, err := tx.ExecContext(ctx, s.d.WriteLock); err != nil {
			return fmt.Errorf("take the write lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version BIGINT PRIMARY KEY,
	name TEXT NOT NULL,
	applied_at BIGINT NOT NULL
)`); err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return err
	}
	applied := map[int64]bool{}
	var newest int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
		newest = max(newest, v)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if latest := ms[len(ms)-1].version; newest > latest {
		return &SchemaTooNewError{Database: newest, Binary: latest}
	}
	insert := s.d.Rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`)
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, insert, m.version, m.name, time.Now().UnixNano()); err != nil {
			return fmt.Errorf("record migration %d: %w", m.version, err)
		}
	}
	return tx.Commit()
}
