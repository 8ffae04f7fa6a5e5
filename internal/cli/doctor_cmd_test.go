package cli

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/doctor"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/testkit"
)

// TestDoctorAgainstARunningServer runs kiln doctor on the host of a running kiln
// serve: its own data dir's KEK and CA pass, its listener's port is reported in
// use, and a Subnet naming an interface the host lacks fails the run with a fix.
func TestDoctorAgainstARunningServer(t *testing.T) {
	s := testkit.Serve(t, testkit.ServeOptions{})
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	ipxe := t.TempDir()
	os.WriteFile(filepath.Join(ipxe, "ipxe.efi"), []byte("iPXE 1.21.1 https"), 0o644)
	// kiln.yaml as kiln serve reads it: keys the doctor has no flag for are skipped.
	cfg := filepath.Join(t.TempDir(), "kiln.yaml")
	os.WriteFile(cfg, []byte("listen: "+u.Host+"\nhttps-listen: \"\"\ntftp-listen: \"\"\nipxe-dir: "+ipxe+"\ncert-ttl: 24h\n"), 0o600)
	args := []string{"doctor", "--config", cfg, "--skip-dhcp-check"}

	out, err := s.Kiln("", args...)
	if err != nil {
		t.Fatalf("doctor on a healthy host failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"warn  port listen: TCP " + u.Host + " cannot be bound",
		"ok    kek file: " + filepath.Join(s.DataDir, "kek.key") + ", mode 0600",
		"ok    CA certificate: expires",
		"ok    subnets: none defined",
		"ok    ipxe ipxe.efi: iPXE 1.21.1, HTTPS-capable",
		"warn  ipxe snponly.efi: missing",
		fmt.Sprintf("ok    database schema: SQLite %s at schema version %d, this Kiln's", filepath.Join(s.DataDir, "kiln.db"), sqlite.LatestSchemaVersion()),
		"ok    database integrity: SQLite " + filepath.Join(s.DataDir, "kiln.db") + ": quick_check ok",
		"ok    clock skew to the database: n/a",
		"data dir free space: " + s.DataDir + ": ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}

	s.MustKiln("apiVersion: kiln.dev/v1\nkind: Subnet\nmetadata: {name: lab}\nspec: {cidr: 10.99.0.0/24, pools: [{start: 10.99.0.10, end: 10.99.0.19}], interfaces: [kiln-absent0]}\n", "apply", "-f", "-")
	out, err = s.Kiln("", args...)
	if err == nil {
		t.Fatalf("doctor passed with a Subnet on a missing interface:\n%s", out)
	}
	if !strings.Contains(out, "FAIL  subnet lab: names interface kiln-absent0, which this host does not have\n      fix: ") {
		t.Errorf("doctor output lacks the subnet failure and its fix:\n%s", out)
	}
}

// TestDoctorDatabase: the database findings on a healthy SQLite store, a newer
// schema, a damaged file, and PostgreSQL (schema and clock skew).
func TestDoctorDatabase(t *testing.T) {
	ctx := context.Background()
	byCheck := func(fs []doctor.Finding) map[string]doctor.Finding {
		m := map[string]doctor.Finding{}
		for _, f := range fs {
			m[f.Check] = f
		}
		return m
	}
	dir := t.TempDir()
	st := testkit.OpenSQLite(t, dir)
	st.Close()
	got := byCheck(databaseFindings(ctx, dir, ""))
	for check, want := range map[string]string{
		"database schema":            fmt.Sprintf("at schema version %d, this Kiln's", sqlite.LatestSchemaVersion()),
		"database integrity":         "quick_check ok",
		"clock skew to the database": "n/a: SQLite",
		"data dir free space":        "free of",
	} {
		if f := got[check]; f.Status != doctor.OK || !strings.Contains(f.Detail, want) {
			t.Errorf("healthy SQLite, %s: %v %q; want ok saying %q", check, f.Status, f.Detail, want)
		}
	}

	db, err := sql.Open("sqlite", filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 1)`, sqlite.LatestSchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if f := byCheck(databaseFindings(ctx, dir, ""))["database schema"]; f.Status != doctor.Fail || !strings.Contains(f.Detail, "newer than this Kiln's") || f.Fix == "" {
		t.Errorf("newer schema: %+v", f)
	}

	// Damage: overwrite the tables' root pages (the schema, which spans more
	// than the first page since schema 5, stays readable; the tables do not).
	path := filepath.Join(dir, sqlite.FileName)
	db, err = sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var pageSize int
	var roots []int
	if err := db.QueryRow(`PRAGMA page_size`).Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT rootpage FROM sqlite_master WHERE type = 'table' AND rootpage > 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p int
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		roots = append(roots, p)
	}
	if err := rows.Err(); err != nil || len(roots) == 0 {
		t.Fatalf("tables' root pages: %v, %v", roots, err)
	}
	rows.Close()
	db.Close()
	b, _ := os.ReadFile(path)
	for _, p := range roots {
		for i := (p - 1) * pageSize; i < p*pageSize && i < len(b); i++ {
			b[i] = 0x5a
		}
	}
	os.WriteFile(path, b, 0o600)
	os.Remove(path + "-wal")
	os.Remove(path + "-shm")
	if f := byCheck(databaseFindings(ctx, dir, ""))["database integrity"]; f.Status != doctor.Fail || f.Fix == "" {
		t.Errorf("damaged database: %+v", f)
	}

	if f := byCheck(databaseFindings(ctx, t.TempDir(), ""))["database"]; f.Status != doctor.Warn || !strings.Contains(f.Detail, "does not exist") {
		t.Errorf("no database yet: %+v", f)
	}

	url := pgtest.NewDatabase(t)
	testkit.OpenPostgres(t, url).Close()
	got = byCheck(databaseFindings(ctx, t.TempDir(), url))
	if f := got["database schema"]; f.Status != doctor.OK || !strings.Contains(f.Detail, "PostgreSQL at schema version") {
		t.Errorf("PostgreSQL schema: %+v", f)
	}
	if f := got["clock skew to the database"]; f.Status != doctor.OK || !strings.Contains(f.Detail, "this host's") {
		t.Errorf("PostgreSQL clock skew (same host): %+v", f)
	}
	if f := byCheck(databaseFindings(ctx, t.TempDir(), "mysql://x"))["database"]; f.Status != doctor.Fail {
		t.Errorf("unsupported scheme: %+v", f)
	}
}
