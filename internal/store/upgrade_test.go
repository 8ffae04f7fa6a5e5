package store_test

// Upgrades from every earlier schema. testdata/schema holds, for each schema
// version N, a SQLite database (sqlite-vN.db) and a PostgreSQL dump
// (postgres-vN.sql) made by the last Kiln whose migrations end at N, driven
// through its CLI and DHCP (fixtures_test.go): a subnet, machines (one with a
// reserved address), a lease taken by ISC dhclient and its timeline events, the
// bootstrap admin and a viewer API token, from schema 2 a join token, the
// enrollment CA and a secret sealed under the test KEK in
// testdata/schema/test-kek.hex, and the audit entries all that wrote. The tests
// open each with today's code, migrate it, and read the data back; one starts
// today's kiln serve on each.
//
// Which schemas are "earlier": every distinct set of migrations in the history.
// `git log -p` of the migration directories shows that no migration file was
// changed after it was added (0001 in b3cb729, 0002 in 05d3f65, 0003 in
// 31406da), so the set at version N is exactly today's first N files, and
// there is no historical schema that the numbered migrations do not
// reproduce. TestMigrationsAppendOnly keeps it so: it fails when a migration
// that a fixture was made with is edited in place. No release was tagged; the
// last commit of each migration set stands for its release.

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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

func TestMain(m *testing.M) { os.Exit(testkit.Main(func() int { return pgtest.Main(m) })) }

const (
	fixtureDir    = "testdata/schema"
	fixtureSecret = "fixture-db-password"
	// secretsSince is the schema version that added the secret tables.
	secretsSince = 2
)

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

const secretManifest = "kind: Secret\nmetadata: {name: db-password}\nspec: {machines: [web-1]}\n"

// checkUpgraded reads back what the fixture of schema version v holds,
// verifies the audit chain, then keys it (as kiln serve's first start on an old
// database does) and writes through the upgraded store.
func checkUpgraded(t *testing.T, st store.Store, v int64, auditDir string) {
	t.Helper()
	ctx := context.Background()
	inv := &inventory.Service{Store: st}
	web1, err := inv.Get(ctx, "Machine", "web-1")
	if err != nil {
		t.Fatalf("machine web-1: %v", err)
	}
	spec, err := resource.Typed[resource.MachineSpec](web1)
	if err != nil || len(spec.Interfaces) != 1 || spec.Interfaces[0].IP != fixtureNet+".21" || spec.Interfaces[0].MAC != "52:54:00:77:00:01" {
		t.Errorf("machine web-1: %+v, %v; want its reservation %s.21 for 52:54:00:77:00:01", spec, err, fixtureNet)
	}
	if v >= joinTokensSince {
		if _, err := inv.Get(ctx, "JoinToken", "jt-1"); err != nil {
			t.Errorf("join token jt-1: %v", err)
		}
	}
	err = st.View(ctx, func(tx store.Tx) error {
		lease, err := tx.Get(ctx, "Lease", fixtureLeaseIP)
		if err != nil {
			return fmt.Errorf("lease %s: %w", fixtureLeaseIP, err)
		}
		ls, err := resource.Typed[resource.LeaseSpec](lease)
		if err != nil || ls.MAC != fixtureClientMAC || ls.State != "bound" || ls.Subnet != "lab" || ls.ExpiresAt == nil {
			return fmt.Errorf("lease %s: %+v, %v", fixtureLeaseIP, ls, err)
		}
		owner, err := tx.LookupKey(ctx, "Machine", "mac:52:54:00:77:00:01")
		if err != nil || owner.Metadata.Name != "web-1" {
			return fmt.Errorf("MAC of web-1 looked up: %v, %v", owner, err)
		}
		if _, err := tx.KeysVersion(ctx); err != nil {
			return fmt.Errorf("keys version: %w", err)
		}
		toks, err := tx.ListAPITokens(ctx)
		if err != nil || !slices.ContainsFunc(toks, func(k store.APIToken) bool { return k.Name == "ci" && k.Role == store.RoleViewer && k.Hash != "" }) ||
			!slices.ContainsFunc(toks, func(k store.APIToken) bool { return k.Name == "bootstrap-admin" && k.Role == store.RoleAdmin }) {
			return fmt.Errorf("API tokens %+v, %v; want bootstrap-admin and the viewer token ci", toks, err)
		}
		evs, err := tx.ListEvents(ctx, "web-2", 100)
		if err != nil || !slices.ContainsFunc(evs, func(e store.Event) bool {
			return strings.HasPrefix(e.Type, "DHCP") && strings.Contains(e.Message, fixtureLeaseIP)
		}) {
			return fmt.Errorf("events of web-2: %+v, %v; want its DHCP lease", evs, err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	keys := fixtureKeys(t)
	// The chain key as kiln serve derives it from a KEK it never rotated.
	key, err := audit.KeyFromKEK(keys.CurrentKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(auditDir, 0o700); err != nil {
		t.Fatal(err)
	}
	chain := audit.NewChain(key, filepath.Join(auditDir, "audit.head"))
	if res, err := store.VerifyAudit(ctx, st, chain); err != nil || !res.OK || res.Entries < 4 {
		t.Errorf("audit chain as stored: %+v, %v", res, err)
	}
	// Continue as today's kiln serve would: key the chain before anything
	// appends to it (a reveal is audited), then read and write.
	if err := st.(store.AuditKeyer).KeyAuditChain(ctx, chain); err != nil {
		t.Fatalf("key the audit chain: %v", err)
	}
	svc := &secrets.Service{Store: st, Keys: keys}
	if v >= secretsSince {
		got, _, err := svc.Reveal(ctx, inventory.Actor{ID: "test", Role: store.RoleAdmin}, "db-password", 0)
		if err != nil || string(got) != fixtureSecret {
			t.Errorf("secret db-password: %q, %v", got, err)
		}
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
	if res, err := store.VerifyAudit(ctx, st, chain); err != nil || !res.OK {
		t.Errorf("audit chain after the upgrade: %+v, %v", res, err)
	}
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

// TestUpgradeServe starts today's kiln serve on each SQLite fixture, as an
// operator upgrading in place would (the old release's kiln.db and kek.key in
// the data dir): it migrates, opens the CA the old release sealed (schema 2 on)
// or creates one, and serves the old data through the API.
func TestUpgradeServe(t *testing.T) {
	testkit.Slow(t, "starts kiln serve per schema version")
	latest := sqlite.LatestSchemaVersion()
	for v := int64(1); v <= latest; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			dir := copyFixture(t, filepath.Join(fixtureDir, fmt.Sprintf("sqlite-v%d.db", v)))
			kek, err := os.ReadFile(filepath.Join(fixtureDir, "test-kek.hex"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "kek.key"), kek, 0o600); err != nil {
				t.Fatal(err)
			}
			// The fixture's admin token is not kept; the operator's would be.
			st := testkit.OpenSQLite(t, dir)
			admin := testkit.APIToken(t, st, store.RoleAdmin, "operator")
			st.Close()
			s := testkit.Serve(t, testkit.ServeOptions{DataDir: dir, HTTPS: true})
			kiln := func(args ...string) string {
				t.Helper()
				out, err := s.Kiln("", append([]string{"--token", admin}, args...)...)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			if got := kiln("get", "machines", "-o", "name"); got != "machine/web-1\nmachine/web-2\n" {
				t.Errorf("machines: %q", got)
			}
			if got := kiln("get", "lease", fixtureLeaseIP, "-o", "name"); got != "lease/"+fixtureLeaseIP+"\n" {
				t.Errorf("lease: %q", got)
			}
			if got := kiln("audit", "verify"); !strings.Contains(got, "audit chain OK") {
				t.Errorf("audit verify: %s", got)
			}
			if got := kiln("ca", "show", "--fingerprint"); len(strings.TrimSpace(got)) < 64 {
				t.Errorf("ca show --fingerprint: %q", got)
			}
			if v >= secretsSince {
				if got := kiln("secret", "get", "db-password", "--reveal"); got != fixtureSecret {
					t.Errorf("secret: %q", got)
				}
			}
			if v >= joinTokensSince {
				kiln("get", "jointoken", "jt-1")
			}
			if out, err := s.Kiln("kind: Machine\nmetadata: {name: web-3}\nspec: {profile: base}\n", "--token", admin, "apply", "-f", "-"); err != nil {
				t.Errorf("apply on the upgraded server: %v\n%s", err, out)
			}
			if got := kiln("audit", "verify"); !strings.Contains(got, "audit chain OK") {
				t.Errorf("audit verify after a write: %s", got)
			}
		})
	}
}

// TestServeRefusesNewerSchema: kiln serve on a database a newer Kiln migrated
// exits at start, naming both versions and what to do, before it listens.
func TestServeRefusesNewerSchema(t *testing.T) {
	testkit.Slow(t, "runs kiln serve")
	latest := sqlite.LatestSchemaVersion()
	dir := copyFixture(t, filepath.Join(fixtureDir, fmt.Sprintf("sqlite-v%d.db", latest)))
	db, err := sql.Open("sqlite", filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from_the_future', 1)`, latest+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testkit.KilnBinary(t), "serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--https-listen=", "--tftp-listen=")
	cmd.Env = testkit.CleanEnv()
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("kiln serve on a newer schema: %v (want an exit at start)\n%s", err, out)
	}
	want := fmt.Sprintf("the database is at schema version %d, newer than this Kiln's %d (a downgrade is not supported): run the Kiln version that wrote it or a newer one, or restore a backup", latest+1, latest)
	if !strings.Contains(string(out), want) {
		t.Errorf("kiln serve's error:\n%s\nwant it to say %q", out, want)
	}
}
