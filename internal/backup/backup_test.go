package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/secrets"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
	"github.com/kilnhq/kiln/internal/testkit"
)

const secretValue = "s3cret-value"

// site is a data dir as kiln serve leaves it: kiln.db, kek.key, audit-chain.key,
// audit.head, with machines, a secret and a keyed audit chain.
type site struct {
	dir   string
	st    store.Store
	inv   *inventory.Service
	keys  *secrets.KeyRing
	chain *audit.Chain
}

func newSite(t *testing.T) *site {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s := &site{dir: dir}
	s.st, s.keys, s.chain = openSite(t, dir)
	s.inv = &inventory.Service{Store: s.st}
	ctx := context.Background()
	if _, err := testkit.Apply(ctx, s.inv,
		"kind: Profile\nmetadata: {name: base}\nspec: {boot: {agent: true}}\n",
		"kind: Machine\nmetadata: {name: web-1}\nspec: {profile: base, interfaces: [{mac: '52:54:00:88:00:01', ip: 10.88.0.21}]}\n",
		"kind: Secret\nmetadata: {name: db-password}\nspec: {machines: [web-1]}\n"); err != nil {
		t.Fatal(err)
	}
	svc := &secrets.Service{Store: s.st, Keys: s.keys}
	if _, err := svc.Set(ctx, inventory.Actor{ID: "test", Role: store.RoleAdmin}, "db-password", []byte(secretValue)); err != nil {
		t.Fatal(err)
	}
	s.chain.Flush()
	return s
}

// openSite opens a data dir as kiln serve does: the store, the KEK (created
// at first start), the audit chain keyed and anchored beside it.
func openSite(t *testing.T, dir string) (store.Store, *secrets.KeyRing, *audit.Chain) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, dir, sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keys, err := secrets.LoadKeyRing(filepath.Join(dir, KEKName))
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, AuditKeyName)
	var key []byte
	if b, err := os.ReadFile(keyPath); err == nil {
		key, _ = hex.DecodeString(strings.TrimSpace(string(b)))
	} else {
		key, _ = audit.KeyFromKEK(keys.CurrentKey())
		if err := os.WriteFile(keyPath, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	chain := audit.NewChain(key, filepath.Join(dir, AuditHeadName))
	if err := st.(store.AuditKeyer).KeyAuditChain(ctx, chain); err != nil {
		t.Fatal(err)
	}
	if err := (&secrets.Service{Store: st, Keys: keys}).Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	return st, keys, chain
}

func backupOf(t *testing.T, s *site, includeKeys bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	m, err := Create(context.Background(), &buf, Options{DataDir: s.dir, IncludeKeys: includeKeys, KilnVersion: "v0.0.0-test"})
	if err != nil {
		t.Fatal(err)
	}
	if m.SchemaVersion != sqlite.LatestSchemaVersion() || m.KeysIncluded != includeKeys {
		t.Errorf("manifest %+v", m)
	}
	return buf.Bytes()
}

func restoreTo(t *testing.T, archive []byte, opts RestoreOptions) (*Restored, error) {
	t.Helper()
	opts.SchemaVersion = sqlite.LatestSchemaVersion()
	return Restore(context.Background(), bytes.NewReader(archive), opts)
}

// TestRoundTrip backs up while writers commit, restores into a new data dir,
// and continues there: the objects, the secret and the keyed audit chain are
// those of the moment of the backup.
func TestRoundTrip(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	// Writers commit while the backup runs: the snapshot is one commit's state.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 500; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := testkit.Apply(ctx, s.inv, fmt.Sprintf("kind: Machine\nmetadata: {name: busy-%d}\nspec: {profile: base}\n", i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	archive := backupOf(t, s, true)
	close(stop)
	wg.Wait()
	s.chain.Flush()

	dir := filepath.Join(t.TempDir(), "restored")
	res, err := restoreTo(t, archive, RestoreOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if res.NeedsKEK {
		t.Error("the KEK was in the archive, yet the restore says it is needed")
	}
	for _, name := range []string{DatabaseName, KEKName, AuditKeyName, AuditHeadName} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("restored %s: %v", name, err)
		} else if fi.Mode().Perm() != 0o600 {
			t.Errorf("restored %s has mode %04o, want 0600", name, fi.Mode().Perm())
		}
	}
	st, keys, chain := openSite(t, dir)
	inv := &inventory.Service{Store: st}
	if _, err := inv.Get(ctx, "Machine", "web-1"); err != nil {
		t.Errorf("machine web-1 after the restore: %v", err)
	}
	got, _, err := (&secrets.Service{Store: st, Keys: keys}).Reveal(ctx, inventory.Actor{ID: "test", Role: store.RoleAdmin}, "db-password", 0)
	if err != nil || string(got) != secretValue {
		t.Errorf("secret after the restore: %q, %v", got, err)
	}
	res2, err := store.VerifyAudit(ctx, st, chain)
	if err != nil || !res2.OK {
		t.Errorf("audit chain after the restore: %+v, %v", res2, err)
	}
	// The restored Kiln continues: a write, and the chain still verifies.
	if _, err := testkit.Apply(ctx, inv, "kind: Machine\nmetadata: {name: after}\nspec: {profile: base}\n"); err != nil {
		t.Fatal(err)
	}
	chain.Flush()
	if res3, err := store.VerifyAudit(ctx, st, chain); err != nil || !res3.OK {
		t.Errorf("audit chain after a write on the restored store: %+v, %v", res3, err)
	}
}

// TestKeysLeftOut: by default the archive holds no key, and the restore says
// the KEK is needed; with the KEK copied, the secret opens.
func TestKeysLeftOut(t *testing.T) {
	s := newSite(t)
	archive := backupOf(t, s, false)
	kek, _ := os.ReadFile(filepath.Join(s.dir, KEKName))
	if bytes.Contains(gunzip(t, archive), bytes.TrimSpace(kek)) {
		t.Fatal("the archive holds the KEK although keys were not included")
	}
	dir := filepath.Join(t.TempDir(), "restored")
	res, err := restoreTo(t, archive, RestoreOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !res.NeedsKEK {
		t.Error("restore without a KEK anywhere does not say it is needed")
	}
	if _, err := os.Stat(filepath.Join(dir, KEKName)); err == nil {
		t.Error("a KEK appeared in the restored data dir")
	}
	// A wrong KEK at the target is refused (the secrets would not open).
	dir2 := filepath.Join(t.TempDir(), "restored2")
	os.MkdirAll(dir2, 0o700)
	other := sha256.Sum256([]byte("another key"))
	if err := os.WriteFile(filepath.Join(dir2, KEKName), []byte(hex.EncodeToString(other[:])), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreTo(t, archive, RestoreOptions{DataDir: dir2, Force: true}); err == nil || !strings.Contains(err.Error(), "not the one the backed-up secrets are sealed with") {
		t.Errorf("restore with another KEK in place: %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(dir2, DatabaseName)); err == nil {
		t.Error("the refused restore wrote the database")
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	// Read it as restore does, into a scratch dir, then concatenate.
	m, err := readArchive(bytes.NewReader(b), dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, f := range m.Files {
		c, _ := os.ReadFile(filepath.Join(dir, f.Name))
		all = append(all, c...)
	}
	return all
}

// TestRestoreRefusals: each refused restore names the reason and leaves the
// data dir as it was.
func TestRestoreRefusals(t *testing.T) {
	s := newSite(t)
	good := backupOf(t, s, true)
	latest := sqlite.LatestSchemaVersion()

	// Rewrite the archive with the manifest changed by edit, or a member by damage.
	rewrite := func(edit func(m *Manifest), damage func(name string, b []byte) []byte) []byte {
		stage := t.TempDir()
		m, err := readArchive(bytes.NewReader(good), stage, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		var members []member
		for _, f := range m.Files {
			b, _ := os.ReadFile(filepath.Join(stage, f.Name))
			if damage != nil {
				b = damage(f.Name, b)
			}
			members = append(members, member{f.Name, b})
		}
		if edit != nil {
			edit(m)
		}
		return rawArchive(t, m, members)
	}
	flip := func(name string, b []byte) []byte {
		if name == DatabaseName {
			b[len(b)/2] ^= 0xff
		}
		return b
	}
	cases := []struct {
		name    string
		archive []byte
		prepare func(dir string)
		force   bool
		want    string
	}{
		{"newer schema", rewrite(func(m *Manifest) { m.SchemaVersion = latest + 1 }, nil), nil, false,
			fmt.Sprintf("schema version %d, newer than this Kiln's %d", latest+1, latest)},
		{"damaged member", rewrite(nil, flip), nil, false, `"kiln.db": sha256`},
		{"truncated", good[:len(good)/2], nil, false, "unexpected EOF"},
		{"not a backup", []byte("hello"), nil, false, "not a gzip file"},
		{"other format", rewrite(func(m *Manifest) { m.Format = "kiln-backup/99" }, nil), nil, false, `format "kiln-backup/99"`},
		{"path in a name", rewrite(func(m *Manifest) { m.Files[0].Name = "../kiln.db" }, nil), nil, false, "not a file a Kiln backup holds"},
		{"non-empty data dir", good, func(dir string) { os.WriteFile(filepath.Join(dir, "kiln.db"), []byte("old"), 0o600) }, false, "is not empty (kiln.db)"},
		{"schema in manifest not the database's", rewrite(func(m *Manifest) { m.SchemaVersion = 1 }, nil), nil, false, "the manifest says 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			os.MkdirAll(dir, 0o700)
			if c.prepare != nil {
				c.prepare(dir)
			}
			before := listDir(t, dir)
			_, err := restoreTo(t, c.archive, RestoreOptions{DataDir: dir, Force: c.force})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("restore: %v, want an error saying %q", err, c.want)
			}
			if after := listDir(t, dir); after != before {
				t.Errorf("the refused restore changed the data dir:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// TestForceReplacesAndDropsStaleWAL: --force replaces kiln.db and removes a
// -wal left by the old database (SQLite would replay it into the restored one).
func TestForceReplacesAndDropsStaleWAL(t *testing.T) {
	s := newSite(t)
	archive := backupOf(t, s, true)
	dir := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(dir, 0o700)
	for _, f := range []string{DatabaseName, DatabaseName + "-wal", DatabaseName + "-shm", "admin.token"} {
		os.WriteFile(filepath.Join(dir, f), []byte("stale"), 0o600)
	}
	if _, err := restoreTo(t, archive, RestoreOptions{DataDir: dir, Force: true}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{DatabaseName + "-wal", DatabaseName + "-shm"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s of the replaced database is still there", f)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "admin.token")); string(b) != "stale" {
		t.Error("a file that is not Kiln's restored state was touched")
	}
	st, _, _ := openSite(t, dir)
	if _, err := (&inventory.Service{Store: st}).Get(context.Background(), "Machine", "web-1"); err != nil {
		t.Errorf("after a forced restore: %v", err)
	}
}

// TestManifestRecordsEveryMember: the manifest's sizes and hashes are those of
// the members (checked independently of readArchive).
func TestManifestRecordsEveryMember(t *testing.T) {
	s := newSite(t)
	var buf bytes.Buffer
	m, err := Create(context.Background(), &buf, Options{DataDir: s.dir, KilnVersion: "v1.2.3", Now: func() time.Time { return time.Unix(1e9, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	if m.KilnVersion != "v1.2.3" || !m.CreatedAt.Equal(time.Unix(1e9, 0)) || m.Format != Format {
		t.Errorf("manifest %+v", m)
	}
	names := map[string]bool{}
	for _, f := range m.Files {
		names[f.Name] = true
	}
	if !names[DatabaseName] || !names[AuditHeadName] || names[KEKName] || names[AuditKeyName] {
		t.Errorf("members %v: want kiln.db and audit.head, no keys", names)
	}
	raw, _ := json.Marshal(m)
	if strings.Contains(string(raw), secretValue) {
		t.Error("the manifest holds the secret's value")
	}
}

func listDir(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		out = append(out, fmt.Sprintf("%s:%x", strings.TrimPrefix(p, dir), sha256.Sum256(b)))
		return nil
	})
	return strings.Join(out, " ")
}

type member struct {
	name string
	data []byte
}

// rawArchive writes an archive as given, whatever the manifest says.
func rawArchive(t testing.TB, m *Manifest, members []member) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	mb, _ := json.Marshal(m)
	for _, e := range append([]member{{ManifestName, mb}}, members...) {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o600, Size: int64(len(e.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// TestKeysRefusedDuringRotation: with kek.key.new beside the KEK (a rotation
// kiln serve has not finished), an archive with keys is refused; one without
// keys is still written.
func TestKeysRefusedDuringRotation(t *testing.T) {
	s := newSite(t)
	os.WriteFile(filepath.Join(s.dir, KEKName+".new"), []byte(strings.Repeat("cd", 32)), 0o600)
	var buf bytes.Buffer
	if _, err := Create(context.Background(), &buf, Options{DataDir: s.dir, IncludeKeys: true}); err == nil || !strings.Contains(err.Error(), "key rotation is not finished") {
		t.Errorf("backup with keys during a rotation: %v, want a refusal", err)
	}
	if _, err := Create(context.Background(), &buf, Options{DataDir: s.dir}); err != nil {
		t.Errorf("backup without keys during a rotation: %v", err)
	}
}

// TestKEKFileElsewhere: with --kek-file outside the data dir (and named
// otherwise), backup reads the KEK, chain key and head there, and restore puts
// them back there, the KEK under its own name.
func TestKEKFileElsewhere(t *testing.T) {
	s := newSite(t)
	s.chain.Flush()
	keys := filepath.Join(t.TempDir(), "keys")
	os.MkdirAll(keys, 0o700)
	for from, to := range map[string]string{KEKName: "site.kek", AuditKeyName: AuditKeyName, AuditHeadName: AuditHeadName} {
		if err := os.Rename(filepath.Join(s.dir, from), filepath.Join(keys, to)); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	m, err := Create(context.Background(), &buf, Options{DataDir: s.dir, KEKFile: filepath.Join(keys, "site.kek"), IncludeKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 4 {
		t.Errorf("members %+v: want the database, the head and both keys", m.Files)
	}
	dir, keys2 := filepath.Join(t.TempDir(), "data"), filepath.Join(t.TempDir(), "keys")
	if _, err := restoreTo(t, buf.Bytes(), RestoreOptions{DataDir: dir, KEKFile: filepath.Join(keys2, "site.kek")}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"site.kek", AuditKeyName, AuditHeadName} {
		if _, err := os.Stat(filepath.Join(keys2, f)); err != nil {
			t.Errorf("restored %s next to the KEK: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(keys2, KEKName)); err == nil {
		t.Error("the KEK was restored as kek.key, not as --kek-file names it")
	}
}

// TestBackupOfAnOlderSchema: a backup of a database at schema 1 (the store's
// fixture, made by that release) records schema 1, restores, and today's store
// migrates it on open.
func TestBackupOfAnOlderSchema(t *testing.T) {
	b, err := os.ReadFile("../store/testdata/schema/sqlite-v1.db")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(src, 0o700)
	os.WriteFile(filepath.Join(src, DatabaseName), b, 0o600)
	var buf bytes.Buffer
	m, err := Create(context.Background(), &buf, Options{DataDir: src})
	if err != nil {
		t.Fatal(err)
	}
	if m.SchemaVersion != 1 {
		t.Fatalf("manifest schema %d, want 1", m.SchemaVersion)
	}
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := restoreTo(t, buf.Bytes(), RestoreOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	st := testkit.OpenSQLite(t, dir)
	if _, err := (&inventory.Service{Store: st}).Get(context.Background(), "Machine", "web-1"); err != nil {
		t.Errorf("machine of the schema 1 backup after migrating: %v", err)
	}
	db, _ := sqlite.OpenExisting(context.Background(), filepath.Join(dir, DatabaseName))
	defer db.Close()
	if v, err := sqlite.SchemaVersion(context.Background(), db); err != nil || v != sqlite.LatestSchemaVersion() {
		t.Errorf("restored schema 1 database after opening: %d, %v", v, err)
	}
}
