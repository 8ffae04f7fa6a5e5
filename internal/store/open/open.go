// Package open picks Kiln's store backend from a database URL.
package open

import (
	"context"
	"fmt"
	"strings"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

// Open opens the store databaseURL names:
//
//	""                         SQLite, kiln.db in dataDir
//	sqlite://                  the same
//	sqlite:///var/lib/kiln     SQLite, kiln.db in /var/lib/kiln
//	postgres://... postgresql://...   PostgreSQL
func Open(ctx context.Context, dataDir, databaseURL string, opts sqlstore.Options) (store.Store, error) {
	scheme, rest, ok := strings.Cut(databaseURL, "://")
	switch {
	case databaseURL == "":
		return sqlite.Open(ctx, dataDir, opts)
	case !ok:
		return nil, fmt.Errorf("store: database URL %s: expected postgres://..., postgresql://... or sqlite:///dir", redact(databaseURL))
	}
	switch strings.ToLower(scheme) {
	case "sqlite":
		switch {
		case rest == "":
			return sqlite.Open(ctx, dataDir, opts)
		case strings.HasPrefix(rest, "/"):
			return sqlite.Open(ctx, rest, opts)
		default:
			return nil, fmt.Errorf("store: database URL %q: a SQLite URL is sqlite:// (the data directory) or sqlite:///absolute/dir", databaseURL)
		}
	case "postgres", "postgresql":
		return postgres.Open(ctx, databaseURL, opts)
	default:
		return nil, fmt.Errorf("store: database URL scheme %q is not supported (use postgres://, postgresql:// or sqlite://)", scheme)
	}
}

// redact keeps a malformed URL's text out of messages past its first characters:
// it may hold a password.
func redact(s string) string {
	if i := strings.IndexAny(s, ":@"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 20 {
		s = s[:20]
	}
	return fmt.Sprintf("%q...", s)
}
