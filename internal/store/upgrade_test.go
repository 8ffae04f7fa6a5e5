package store_test

// Upgrades from every earlier schema. testdata/schema holds, for each schema
// version N, a SQLite database (sqlite-vN.db) and a PostgreSQL dump
// (postgres-vN.sql) whose tables were made by the migration set of version N,
// with representative rows: a subnet, machines (one with a reserved address),
// leases, a join token, an API token, events, a secret sealed under the test
// KEK in testdata/schema/test-kek.hex (from version 2, which added secrets) and the
// audit entries writing them made. The tests open each with today's code,
// migrate it, and read the data back.
//
// Which schemas are "earlier": every distinct set of migrations in the history.
// `git log -p` of the migration directories shows that no migration file was
// changed after it was added (0001 in b3cb729, 0002 in 05d3f65, 0003 in
// 31406da), so the set at version N is exactly today's first N files, and
// there is no historical schema that the numbered migrations do not
// reproduce. TestMigrationsAppendOnly keeps it so: it fails when a migration
// that a fixture was made with is edited in place.
//
// Adding migration N+1: run
//
//	go test ./internal/store -run TestSchemaFixtures -update-schema-fixtures
//
// which writes only the missing fixtures (sqlite-v(N+1).db, postgres-v(N+1).sql)
// and the migrations' checksums; the older fixtures stay as they were made.

import (
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/apitoken"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/secrets"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
	"github.com/kilnhq/kiln/internal/testkit"
)

var updateSchemaFixtures = flag.Bool("update-schema-fixtures", false, "write the missing testdata/schema fixtures and the migrations' checksums")

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const (
	fixtureDir    = "testdata/schema"
	fixtureSecret = "fixture-db-password"
	// secretsSince is the schema version that added the secret tables.
	secretsSince = 2
)

// fixtureManifests are the objects every fixture holds, applied as an operator
// would (so the audit chain records them).
var fixtureManifests = []string{
	"kind: Profile\nmetadata: {name: base}\nspec: {boot: {agent: true}}\n",
	"kind: Subnet\nmetadata: {name: lab}\nspec: {cidr: 10.77.0.0/24, pools: [{start: 10.77.0.100, end: 10.77.0.199}]}\n",
	"kind: Machine\nmetadata: {name: web-1, labels: {role: web}}\nspec: {profile: base, interfaces: [{mac: '52:54:00:77:00:01', ip: 10.77.0.21, hostname: web-1}]}\n",
	"kind: Machine\nmetadata: {name: web-2, labels: {role: web}}\nspec: {profile: base, interfaces: [{mac: '52:54:00:77:00:02'}]}\n",
	"kind: JoinToken\nmetadata: {name: jt-1}\nspec: {profile: base, maxUses: 3}\n",
}

const secretManifest = "kind: Secret\nmetadata: {name: db-password}\nspec: {machines: [web-1]}\n"

// fixtureLeaseExpiry is far in the future, so the lease is still bound when read.
var fixtureLeaseExpiry = time.Date(2036, 1, 2, 3, 4, 5, 0, time.UTC)

func migrationFiles(t testing.TB, fsys fs.FS) []string {
	t.Helper()
	files, err := fs.Glob(fsys, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations: %v (%d files)", err, len(files))
	}
	slices.Sort(files)
	return files
}

func TestMigrationsAppendOnly(t *testing.T) {
	path := filepath.Join(fixtureDir, "migrations.sha256")
	var got strings.Builder
	for _, d := range []struct {
		name string
		fsys fs.FS
	}{{"sqlite", sqlite.Dialect().Migrations}, {"postgres", postgres.Dialect().Migrations}} {
		for _, f := range migrationFiles(t, d.fsys) {
			b, _ := fs.ReadFile(d.fsys, f)
			fmt.Fprintf(&got, "%x  %s/%s\n", sha256.Sum256(b), d.name, f)
		}
	}
	if *updateSchemaFixtures {
		if err := os.WriteFile(path, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every recorded migration must be unchanged; new ones may follow.
	gotLines := strings.Split(got.String(), "\n")
	for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
		if !slices.Contains(gotLines, line) {
			t.Errorf("migration changed or removed since its fixtures were made: %s\n"+
				"A released migration must not change: add a new NNNN_*.sql instead.", line)
		}
	}
}

// TestSchemaFixtures checks there is a fixture of every schema version up to
// this binary's, for both engines (and, with -update-schema-fixtures, writes
// the missing ones).
func TestSchemaFixtures(t *testing.T) {
	latest := sqlite.LatestSchemaVersion()
	if pl := postgres.LatestSchemaVersion(); pl != latest {
		t.Fatalf("SQLite migrates to schema %d, PostgreSQL to %d: the engines' migrations must stay in step", latest, pl)
	}
	for v := int64(1); v <= latest; v++ {
		db := filepath.Join(fixtureDir, fmt.Sprintf("sqlite-v%d.db", v))
		if _, err := os.Stat(db); errors.Is(err, fs.ErrNotExist) && *updateSchemaFixtures {
			writeSQLiteFixture(t, db, v)
		}
		dump := filepath.Join(fixtureDir, fmt.Sprintf("postgres-v%d.sql", v))
		if _, err := os.Stat(dump); errors.Is(err, fs.ErrNotExist) && *updateSchemaFixtures {
			writePostgresFixture(t, db, dump, v)
		}
		for _, f := range []string{db, dump} {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("no fixture of schema version %d: %v (run this test with -update-schema-fixtures)", v, err)
			}
		}
	}
}

// TestUpgradeSQLite opens the SQLite fixture of every schema version with
// today's code and checks the data reads back and the store keeps working.
func TestUpgradeSQLite(t *testing.T) {
	latest := sqlite.LatestSchemaVersion()
	for v := int64(1); v <= latest; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			dir := copyFixture(t, filepath.Join(fixtureDir, fmt.Sprintf("sqlite-v%d.db", v)))
			if got := sqliteVersion(t, filepath.Join(dir, sqlite.FileName)); got != v {
				t.Fatalf("fixture sqlite-v%d.db is at schema %d", v, got)
			}
			st := testkit.OpenSQLite(t, dir)
			if got := sqliteVersion(t, filepath.Join(dir, sqlite.FileName)); got != latest {
				t.Errorf("after opening: schema %d, want %d", got, latest)
			}
			checkUpgraded(t, st, v, filepath.Join(dir, "audit"))
		})
	}
}

// TestUpgradePostgres loads the PostgreSQL dump of every schema version into a
// throwaway database and does what TestUpgradeSQLite does.
func TestUpgradePostgres(t *testing.T) {
	testkit.NeedTool(t, "psql", "postgresql-client")
	latest := postgres.LatestSchemaVersion()
	for v := int64(1); v <= latest; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			url := pgtest.NewDatabase(t)
			loadDump(t, url, filepath.Join(fixtureDir, fmt.Sprintf("postgres-v%d.sql", v)))
			if got := postgresVersion(t, url); got != v {
				t.Fatalf("fixture postgres-v%d.sql is at schema %d", v, got)
			}
			st := testkit.OpenPostgres(t, url)
			if got := postgresVersion(t, url); got != latest {
				t.Errorf("after opening: schema %d, want %d", got, latest)
			}
			checkUpgraded(t, st, v, filepath.Join(t.TempDir(), "audit"))
		})
	}
}

// TestDowngradeRefused: a database a newer Kiln migrated is not opened, and the
// error names both versions and what to do.
func TestDowngradeRefused(t *testing.T) {
	latest := sqlite.LatestSchemaVersion()
	dir := copyFixture(t, filepath.Join(fixtureDir, fmt.Sprintf("sqlite-v%d.db", latest)))
	path := filepath.Join(dir, sqlite.FileName)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from_the_future', 1)`, latest+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st, err := sqlite.Open(context.Background(), dir, sqlstore.Options{})
	if err == nil {
		st.Close()
		t.Fatal("a database at a newer schema was opened")
	}
	var tooNew *sqlstore.SchemaTooNewError
	if !errors.As(err, &tooNew) || tooNew.Database != latest+1 || tooNew.Binary != latest {
		t.Fatalf("error %v, want a SchemaTooNewError %d > %d", err, latest+1, latest)
	}
	for _, want := range []string{fmt.Sprintf("schema version %d", latest+1), fmt.Sprintf("this Kiln's %d", latest), "restore a backup"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Nothing was migrated or recorded (opening does switch the file to WAL
	// mode, a header change SQLite makes before Kiln reads the schema).
	if got := sqliteVersion(t, path); got != latest+1 {
		t.Errorf("after the refusal the database is at schema %d, want %d untouched", got, latest+1)
	}
}

func copyFixture(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("fixture: %v (run TestSchemaFixtures with -update-schema-fixtures)", err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, sqlite.FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func sqliteVersion(t *testing.T, path string) int64 {
	t.Helper()
	db, err := sqlite.OpenExisting(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := sqlite.SchemaVersion(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func postgresVersion(t *testing.T, url string) int64 {
	t.Helper()
	db, err := postgres.OpenExisting(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := postgres.SchemaVersion(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func fixtureKeys(t testing.TB) *secrets.KeyRing {
	t.Helper()
	// A published test key (sha256 of "kiln schema fixtures"): it protects
	// nothing but the fixtures' secret. Read with ParseKEK, not LoadKeyRing, which
	// wants a 0600 file that git does not keep.
	b, err := os.ReadFile(filepath.Join(fixtureDir, "test-kek.hex"))
	if err != nil {
		t.Fatal(err)
	}
	kek, err := secrets.ParseKEK(string(b))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secrets.NewKeyRing(kek)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// checkUpgraded reads back what a fixture of schema version v holds, verifies
// the audit chain, then keys it (as kiln serve's first start on an old database
// does) and writes through the upgraded store.
func checkUpgraded(t *testing.T, st store.Store, v int64, auditDir string) {
	t.Helper()
	ctx := context.Background()
	inv := &inventory.Service{Store: st}
	web1, err := inv.Get(ctx, "Machine", "web-1")
	if err != nil {
		t.Fatalf("machine web-1: %v", err)
	}
	spec, err := resource.Typed[resource.MachineSpec](web1)
	if err != nil || len(spec.Interfaces) != 1 || spec.Interfaces[0].IP != "10.77.0.21" || spec.Interfaces[0].MAC != "52:54:00:77:00:01" {
		t.Errorf("machine web-1: %+v, %v; want its reservation 10.77.0.21 for 52:54:00:77:00:01", spec, err)
	}
	if _, err := inv.Get(ctx, "JoinToken", "jt-1"); err != nil {
		t.Errorf("join token jt-1: %v", err)
	}
	err = st.View(ctx, func(tx store.Tx) error {
		lease, err := tx.Get(ctx, "Lease", "10.77.0.100")
		if err != nil {
			return fmt.Errorf("lease 10.77.0.100: %w", err)
		}
		ls, err := resource.Typed[resource.LeaseSpec](lease)
		if err != nil || ls.MAC != "52:54:00:77:00:02" || ls.State != "bound" || ls.ExpiresAt == nil || !ls.ExpiresAt.Equal(fixtureLeaseExpiry) {
			return fmt.Errorf("lease 10.77.0.100: %+v, %v", ls, err)
		}
		owner, err := tx.LookupKey(ctx, "Machine", "mac:52:54:00:77:00:01")
		if err != nil || owner.Metadata.Name != "web-1" {
			return fmt.Errorf("MAC of web-1 looked up: %v, %v", owner, err)
		}
		if _, err := tx.KeysVersion(ctx); err != nil {
			return fmt.Errorf("keys version: %w", err)
		}
		toks, err := tx.ListAPITokens(ctx)
		if err != nil || len(toks) != 1 || toks[0].Name != "ci" || toks[0].Role != store.RoleViewer || toks[0].Hash == "" {
			return fmt.Errorf("API tokens %+v, %v; want the viewer token ci", toks, err)
		}
		evs, err := tx.ListEvents(ctx, "web-1", 10)
		if err != nil || !slices.ContainsFunc(evs, func(e store.Event) bool { return e.Message == "fixture event" && e.Type == "dhcp" }) {
			return fmt.Errorf("events of web-1: %+v, %v", evs, err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	res, err := store.VerifyAudit(ctx, st, nil)
	if err != nil || !res.OK || res.Entries < int64(len(fixtureManifests)) {
		t.Errorf("audit chain as stored: %+v, %v", res, err)
	}
	keys := fixtureKeys(t)
	svc := &secrets.Service{Store: st, Keys: keys}
	if v >= secretsSince {
		got, _, err := svc.Reveal(ctx, inventory.Actor{ID: "test", Role: store.RoleAdmin}, "db-password", 0)
		if err != nil || string(got) != fixtureSecret {
			t.Errorf("secret db-password: %q, %v", got, err)
		}
	}
	// Continue as today's kiln serve would: key the chain, write, verify.
	key, err := audit.KeyFromKEK(keys.CurrentKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(auditDir, 0o700); err != nil {
		t.Fatal(err)
	}
	chain := audit.NewChain(key, filepath.Join(auditDir, "audit.head"))
	if err := st.(store.AuditKeyer).KeyAuditChain(ctx, chain); err != nil {
		t.Fatalf("key the audit chain: %v", err)
	}
	if _, err := testkit.Apply(ctx, inv, "kind: Machine\nmetadata: {name: web-3}\nspec: {profile: base, interfaces: [{mac: '52:54:00:77:00:03'}]}\n"); err != nil {
		t.Fatalf("write after the upgrade: %v", err)
	}
	if err := svc.Reconcile(ctx); err != nil {
		t.Fatalf("secrets after the upgrade: %v", err)
	}
	if _, err := testkit.Apply(ctx, inv, secretManifest); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Set(ctx, inventory.Actor{ID: "test", Role: store.RoleAdmin}, "db-password", []byte("after-upgrade")); err != nil {
		t.Fatalf("set a secret after the upgrade: %v", err)
	}
	chain.Flush()
	res, err = store.VerifyAudit(ctx, st, chain)
	if err != nil || !res.OK {
		t.Errorf("audit chain after the upgrade: %+v, %v", res, err)
	}
}

// writeSourceData fills a store made by today's code with the fixture's rows.
func writeSourceData(t *testing.T, st store.Store, withSecrets bool) {
	t.Helper()
	ctx := context.Background()
	inv := &inventory.Service{Store: st}
	manifests := slices.Clone(fixtureManifests)
	if withSecrets {
		manifests = append(manifests, secretManifest)
	}
	if _, err := testkit.Apply(ctx, inv, manifests...); err != nil {
		t.Fatal(err)
	}
	_, tok, err := apitoken.New(store.RoleViewer, "ci", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(ctx, func(tx store.Tx) error {
		spec := fmt.Sprintf(`{"ip":"10.77.0.100","mac":"52:54:00:77:00:02","subnet":"lab","hostname":"web-2","state":"bound","expiresAt":%q}`,
			fixtureLeaseExpiry.Format(time.RFC3339))
		lease := &resource.Object{APIVersion: resource.APIVersion, Kind: "Lease", Metadata: resource.Metadata{Name: "10.77.0.100"}, Spec: []byte(spec)}
		if err := tx.Create(ctx, lease); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, &store.Event{Machine: "web-1", Time: time.Now(), Type: "dhcp", Message: "fixture event"}); err != nil {
			return err
		}
		return tx.CreateAPIToken(ctx, tok)
	})
	if err != nil {
		t.Fatal(err)
	}
	if withSecrets {
		svc := &secrets.Service{Store: st, Keys: fixtureKeys(t)}
		if err := svc.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Set(ctx, inventory.Actor{ID: "test", Role: store.RoleAdmin}, "db-password", []byte(fixtureSecret)); err != nil {
			t.Fatal(err)
		}
	}
}

// applyMigrations makes the schema of version v as the migration code did
// (unchanged since the first migration): schema_migrations, then each file.
func applyMigrations(t *testing.T, db *sql.DB, fsys fs.FS, v int64, placeholder func(int) string) {
	t.Helper()
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
	version BIGINT PRIMARY KEY,
	name TEXT NOT NULL,
	applied_at BIGINT NOT NULL
)`); err != nil {
		t.Fatal(err)
	}
	for _, f := range migrationFiles(t, fsys) {
		num, name, _ := strings.Cut(strings.TrimSuffix(f, ".sql"), "_")
		n, _ := strconv.ParseInt(num, 10, 64)
		if n > v {
			break
		}
		b, _ := fs.ReadFile(fsys, f)
		if _, err := db.Exec(string(b)); err != nil {
			t.Fatalf("migration %s: %v", f, err)
		}
		q := fmt.Sprintf(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)`, placeholder(1), placeholder(2), placeholder(3))
		if _, err := db.Exec(q, n, name, time.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
}

// writeSQLiteFixture makes dst: the schema of version v by its migrations, and
// the rows today's code writes, copied column by column where the old tables
// have them.
func writeSQLiteFixture(t *testing.T, dst string, v int64) {
	t.Helper()
	srcDir := t.TempDir()
	st, err := sqlite.Open(context.Background(), srcDir, sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeSourceData(t, st, v >= secretsSince)
	st.Close()

	tmp := dst + ".tmp"
	os.Remove(tmp)
	db, err := sql.Open("sqlite", tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	applyMigrations(t, db, sqlite.Dialect().Migrations, v, func(int) string { return "?" })
	if _, err := db.Exec(`ATTACH DATABASE ? AS src`, filepath.Join(srcDir, sqlite.FileName)); err != nil {
		t.Fatal(err)
	}
	for _, table := range sqliteTables(t, db, "main") {
		cols := sqliteColumns(t, db, "main", table)
		srcCols := sqliteColumns(t, db, "src", table)
		cols = slices.DeleteFunc(cols, func(c string) bool { return !slices.Contains(srcCols, c) })
		list := strings.Join(cols, ", ")
		if _, err := db.Exec(fmt.Sprintf(`DELETE FROM main.%s; INSERT INTO main.%s (%s) SELECT %s FROM src.%s`, table, table, list, list, table)); err != nil {
			t.Fatalf("copy %s: %v", table, err)
		}
	}
	if _, err := db.Exec(`DETACH DATABASE src`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`VACUUM`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", dst)
}

func sqliteTables(t *testing.T, db *sql.DB, schema string) []string {
	t.Helper()
	rows, err := db.Query(fmt.Sprintf(`SELECT name FROM %s.sqlite_master WHERE type = 'table' AND name NOT IN ('schema_migrations', 'sqlite_sequence') ORDER BY name`, schema))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

func sqliteColumns(t *testing.T, db *sql.DB, schema, table string) []string {
	t.Helper()
	rows, err := db.Query(fmt.Sprintf(`SELECT name FROM pragma_table_info(%q, %q)`, table, schema))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// writePostgresFixture makes dump: the PostgreSQL schema of version v by its
// migrations, the rows of the SQLite fixture of the same version, and pg_dump.
func writePostgresFixture(t *testing.T, sqliteFixture, dump string, v int64) {
	t.Helper()
	testkit.NeedTool(t, "pg_dump", "postgresql-client")
	url := pgtest.NewDatabase(t)
	pg, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	applyMigrations(t, pg, postgres.Dialect().Migrations, v, func(i int) string { return "$" + strconv.Itoa(i) })
	lite, err := sqlite.OpenExisting(context.Background(), sqliteFixture)
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	tables := sqliteTables(t, lite, "main")
	// Parents before the rows that refer to them (object_keys to objects).
	rank := func(table string) int { return cmp.Or(map[string]int{"objects": -1}[table], 0) }
	slices.SortStableFunc(tables, func(a, b string) int { return cmp.Compare(rank(a), rank(b)) })
	for _, table := range tables {
		cols := sqliteColumns(t, lite, "main", table)
		if _, err := pg.Exec(`DELETE FROM ` + table); err != nil {
			t.Fatal(err)
		}
		rows, err := lite.Query(fmt.Sprintf(`SELECT %s FROM %s`, strings.Join(cols, ", "), table))
		if err != nil {
			t.Fatal(err)
		}
		ph := make([]string, len(cols))
		for i := range ph {
			ph[i] = "$" + strconv.Itoa(i+1)
		}
		insert := fmt.Sprintf(`INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE VALUES (%s)`, table, strings.Join(cols, ", "), strings.Join(ph, ", "))
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			if _, err := pg.Exec(insert, vals...); err != nil {
				t.Fatalf("copy a row of %s: %v", table, err)
			}
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pg.Exec(`SELECT setval(pg_get_serial_sequence('events', 'id'), (SELECT MAX(id) FROM events))`); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("pg_dump", "--no-owner", "--no-privileges", "--dbname", url).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	if err := os.WriteFile(dump, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", dump)
}

// loadDump restores a plain pg_dump into the database at url, as an operator
// would (psql -f).
func loadDump(t *testing.T, url, dump string) {
	t.Helper()
	out, err := exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname", url, "-f", dump).CombinedOutput()
	if err != nil {
		t.Fatalf("psql -f %s: %v\n%s", dump, err, out)
	}
}
