package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/cli"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/testkit"
)

const backupManifests = `kind: Profile
metadata: {name: base}
spec: {boot: {agent: true}}
---
kind: Subnet
metadata: {name: lab}
spec: {cidr: 10.66.0.0/24, pools: [{start: 10.66.0.100, end: 10.66.0.199}]}
---
kind: Machine
metadata: {name: web-1, labels: {role: web}}
spec: {profile: base, interfaces: [{mac: '52:54:00:66:00:01', ip: 10.66.0.21}]}
---
kind: Secret
metadata: {name: db-password}
spec: {machines: [web-1]}
---
kind: JoinToken
metadata: {name: jt-1}
spec: {profile: base, maxUses: 2}
`

// objectsJSON is every object of the kinds a backup must keep, as the API
// returns them (resourceVersions and timestamps included).
func objectsJSON(t *testing.T, s *testkit.Server, token string) string {
	t.Helper()
	out, err := s.Kiln("", "--token", token, "get", "machines,subnets,profiles,secrets,jointokens,leases", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}
	return out
}

// TestBackupRestoreContinues backs up a running kiln serve (machines, a
// reservation, a lease-holding subnet, a join token, an API token, a secret),
// wipes its data dir, restores, starts kiln serve again and checks that (a) the
// API shows the same objects, (b) the audit chain verifies, (c) the secret
// decrypts, that enrollment continues (same CA; a join token made before the
// backup enrolls a host), and that the server keeps writing. The keys are restored from the
// archive (--include-kek) in one run and copied by hand in the other.
func TestBackupRestoreContinues(t *testing.T) {
	for _, includeKEK := range []bool{true, false} {
		name := map[bool]string{true: "with the KEK", false: "KEK kept apart"}[includeKEK]
		t.Run(name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			// The restored server listens where the old one did, as a host
			// restored in place would (join tokens name the enrollment URL).
			httpsAddr := testkit.FreeAddr(t)
			serveArgs := []string{"--https-listen=" + httpsAddr, "--server-san=127.0.0.1"}
			s := startServer(t, dataDir, nil, serveArgs...)
			admin := s.AdminToken
			s.MustKiln(backupManifests, "apply", "-f", "-")
			s.MustKiln("", "secret", "set", "db-password", "--from-literal", "hunter2-restored")
			viewer := strings.TrimSpace(s.MustKiln("", "api-token", "create", "--role", "viewer", "--name", "ci"))
			joinToken := strings.TrimSpace(s.MustKiln("", "join-token", "create", "--profile", "base", "--max-uses", "1", "--ttl", "1h"))
			fingerprint := strings.TrimSpace(s.MustKiln("", "ca", "show", "--fingerprint"))
			before := objectsJSON(t, s, admin)

			archive := filepath.Join(t.TempDir(), "kiln.backup")
			args := []string{"backup", "--out", archive}
			if includeKEK {
				args = append(args, "--include-kek")
			}
			out, err := s.Kiln("", args...) // while kiln serve runs
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(archive); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("archive: %v, mode %v; want 0600", err, fi)
			}
			if _, err := s.Kiln("", "backup", "--out", archive); err == nil || !strings.Contains(err.Error(), "exists") {
				t.Errorf("a second backup over the first: %v, want a refusal", err)
			}
			_ = out
			s.Stop()

			// What the restore needs from elsewhere when the keys were kept apart.
			keys := map[string][]byte{}
			for _, f := range []string{"kek.key", "audit-chain.key"} {
				keys[f], _ = os.ReadFile(filepath.Join(dataDir, f))
			}
			if err := os.RemoveAll(dataDir); err != nil {
				t.Fatal(err)
			}

			restore := func(args ...string) (string, error) {
				return s.Kiln("", append([]string{"restore", "--from", archive}, args...)...)
			}
			out, err = restore()
			if err != nil {
				t.Fatalf("restore into the wiped data dir: %v", err)
			}
			if wantHint := !includeKEK; strings.Contains(out, "copy the key-encryption key") != wantHint {
				t.Errorf("restore output (KEK in archive: %t):\n%s", includeKEK, out)
			}
			if _, err := restore(); err == nil || !strings.Contains(err.Error(), "is not empty") {
				t.Errorf("a second restore into the restored dir: %v, want a refusal without --force", err)
			}
			if !includeKEK {
				for f, b := range keys {
					if err := os.WriteFile(filepath.Join(dataDir, f), b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}

			s2 := startServer(t, dataDir, nil, serveArgs...)
			if after := objectsJSON(t, s2, admin); after != before {
				t.Errorf("objects after the restore differ:\nbefore %s\nafter  %s", before, after)
			}
			if out, err := s2.Kiln("", "--token", viewer, "audit", "verify"); err != nil || !strings.Contains(out, "audit chain OK") {
				t.Errorf("audit verify after the restore (as the restored viewer token): %v\n%s", err, out)
			}
			if got, err := s2.Kiln("", "--token", admin, "secret", "get", "db-password", "--reveal"); err != nil || got != "hunter2-restored" {
				t.Errorf("secret after the restore: %q, %v", got, err)
			}
			// Enrollment continues: the same CA, and a join token made before the
			// backup enrolls a host against the restored server.
			if fp, err := s2.Kiln("", "--token", admin, "ca", "show", "--fingerprint"); err != nil || strings.TrimSpace(fp) != fingerprint {
				t.Errorf("CA after the restore: %q, %v; want %s", fp, err, fingerprint)
			}
			enroll := exec.Command(testkit.KilnBinary(t), "agent", "enroll", "--server", "https://"+httpsAddr, "--ca-fingerprint", fingerprint,
				"--join-token", joinToken, "--dir", filepath.Join(t.TempDir(), "agent"))
			enroll.Env = testkit.CleanEnv()
			if out, err := enroll.CombinedOutput(); err != nil {
				t.Errorf("agent enroll with a join token from before the backup: %v\n%s", err, out)
			}
			s2.MustKiln("kind: Machine\nmetadata: {name: web-2}\nspec: {profile: base}\n", "--token", admin, "apply", "-f", "-")
			if out, err := s2.Kiln("", "--token", admin, "audit", "verify"); err != nil || !strings.Contains(out, "audit chain OK") {
				t.Errorf("audit verify after a write on the restored server: %v\n%s", err, out)
			}
		})
	}
}

// TestBackupRefusesPostgres: a PostgreSQL store is pg_dump's to back up.
func TestBackupRefusesPostgres(t *testing.T) {
	root := cli.NewRoot(&strings.Builder{}, &strings.Builder{})
	root.SetArgs([]string{"backup", "--out", filepath.Join(t.TempDir(), "x"), "--database", "postgres://kiln@db/kiln", "--default-config", ""})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "pg_dump") {
		t.Fatalf("backup of a PostgreSQL store: %v, want the pg_dump hint", err)
	}
}

// TestPostgresDumpRestoreContinues follows the README's PostgreSQL procedure:
// audit.head copied, pg_dump while kiln serve runs, pg_restore into a new
// database, the KEK, audit-chain.key and audit.head next to each other on a new
// host's data dir; kiln serve there shows the same objects, verifies the audit
// chain, decrypts the secret and keeps writing.
func TestPostgresDumpRestoreContinues(t *testing.T) {
	testkit.NeedTool(t, "pg_dump", "postgresql-client")
	testkit.NeedTool(t, "pg_restore", "postgresql-client")
	url := pgtest.NewDatabase(t)
	dir := filepath.Join(t.TempDir(), "data")
	s := startServer(t, dir, nil, "--database", url)
	admin := s.AdminToken
	s.MustKiln(backupManifests, "apply", "-f", "-")
	s.MustKiln("", "secret", "set", "db-password", "--from-literal", "hunter2-pg")
	before := objectsJSON(t, s, admin)

	keep := t.TempDir()
	head, err := os.ReadFile(filepath.Join(dir, "audit.head")) // before the dump
	if err != nil {
		t.Fatal(err)
	}
	dump := filepath.Join(keep, "kiln.dump")
	if out, err := exec.Command("pg_dump", "--format=custom", "--file="+dump, "--dbname", url).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	s.MustKiln("kind: Machine\nmetadata: {name: after-the-dump}\nspec: {profile: base}\n", "apply", "-f", "-")
	s.Stop()

	url2 := pgtest.NewDatabase(t)
	if out, err := exec.Command("pg_restore", "--no-owner", "--dbname", url2, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	dir2 := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(dir2, 0o700)
	for _, f := range []string{"kek.key", "audit-chain.key"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir2, f), b, 0o600)
	}
	os.WriteFile(filepath.Join(dir2, "audit.head"), head, 0o600)

	s2 := startServer(t, dir2, nil, "--database", url2)
	if after := objectsJSON(t, s2, admin); after != before {
		t.Errorf("objects after pg_restore differ:\nbefore %s\nafter  %s", before, after)
	}
	if out, err := s2.Kiln("", "--token", admin, "audit", "verify"); err != nil || !strings.Contains(out, "audit chain OK") {
		t.Errorf("audit verify after pg_restore: %v\n%s", err, out)
	}
	if got, err := s2.Kiln("", "--token", admin, "secret", "get", "db-password", "--reveal"); err != nil || got != "hunter2-pg" {
		t.Errorf("secret after pg_restore: %q, %v", got, err)
	}
	s2.MustKiln("kind: Machine\nmetadata: {name: web-9}\nspec: {profile: base}\n", "--token", admin, "apply", "-f", "-")
	if out, err := s2.Kiln("", "--token", admin, "audit", "verify"); err != nil || !strings.Contains(out, "audit chain OK") {
		t.Errorf("audit verify after a write: %v\n%s", err, out)
	}
}

// TestBackupToStdoutRestoreFromStdin: --out - and --from - stream the archive
// (to pipe it through an encryption tool), in process, without kiln serve.
func TestBackupToStdoutRestoreFromStdin(t *testing.T) {
	src := testkit.NewStore(t, "kind: Machine\nmetadata: {name: piped-1}\nspec: {interfaces: [{mac: '52:54:00:66:00:09'}]}\n").Dir
	var archive, errOut strings.Builder
	root := cli.NewRoot(&archive, &errOut)
	root.SetArgs([]string{"backup", "--out", "-", "--data-dir", src, "--default-config", ""})
	if err := root.Execute(); err != nil {
		t.Fatalf("backup --out -: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(errOut.String(), "the key-encryption key is not in it") {
		t.Errorf("backup's note on stderr: %q", errOut.String())
	}
	dst := filepath.Join(t.TempDir(), "data")
	var out strings.Builder
	root = cli.NewRoot(&out, &errOut)
	root.SetIn(strings.NewReader(archive.String()))
	root.SetArgs([]string{"restore", "--from", "-", "--data-dir", dst, "--default-config", ""})
	if err := root.Execute(); err != nil {
		t.Fatalf("restore --from -: %v", err)
	}
	st := testkit.OpenSQLite(t, dst)
	if _, err := (&inventory.Service{Store: st}).Get(t.Context(), "Machine", "piped-1"); err != nil {
		t.Errorf("machine after a piped backup and restore: %v", err)
	}
}
