package store_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/store/postgres"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/testkit"
)

// The fixtures are made by the Kiln that wrote each schema, driven as an
// operator and a machine would: `kiln serve` (its DHCP on a veth pair), `kiln
// apply`, `kiln api-token create`, `kiln secret set`, and ISC dhclient in a
// network namespace taking a lease. Schema N's fixtures come from the last
// commit whose migrations end at N:
//
//	schema 1: 6662e82 (the DHCP server; before secrets)
//	schema 2: e6abddb (secrets, enrollment CA, join tokens; before keys_version)
//	schema 3: 3278d88 (A/B slots; before the watch change log)
//	schema 4: 18bea48 (the watch change log; annotations inside the labels column)
//	schema 5: this tree
//
// Build an old one with `git archive COMMIT | tar -x -C DIR && go build -C DIR
// -o kiln-vN ./cmd/kiln` (nothing in the repository changes), then, as root:
//
//	go test ./internal/store -run TestSchemaFixtures -update-schema-fixtures \
//	    -kiln-for-schema 1=/tmp/kiln-v1,2=/tmp/kiln-v2
//
// The newest schema is made by this tree's binary unless named. Without
// -kiln-for-schema only missing fixtures are written (a new migration's), so the
// older ones stay as their release made them.

var (
	updateSchemaFixtures = flag.Bool("update-schema-fixtures", false, "write missing testdata/schema fixtures (and those of -kiln-for-schema) and the migrations' checksums")
	kilnForSchema        = flag.String("kiln-for-schema", "", "with -update-schema-fixtures: N=PATH,... the kiln binary whose serve and CLI make schema N's fixtures")
)

const (
	// fixtureNet is the fixtures' subnet; the DHCP client's lease is its first
	// pool address.
	fixtureNet       = "10.78.0"
	fixtureLeaseIP   = fixtureNet + ".100"
	fixtureClientMAC = "52:54:00:77:00:02"
	// joinTokensSince is the first schema whose Kiln knew kind JoinToken.
	joinTokensSince = 2
)

// fixtureManifests are what the operator applies to the Kiln of schema v.
func fixtureManifests(v int64, iface string) string {
	m := fmt.Sprintf(`kind: Profile
metadata: {name: base}
spec: {boot: {agent: true}}
---
kind: Subnet
metadata: {name: lab}
spec: {cidr: %[1]s.0/24, pools: [{start: %[1]s.100, end: %[1]s.199}], bootServer: %[1]s.1, leaseTime: 1h, interfaces: [%[2]s]}
---
kind: Machine
metadata: {name: web-1, labels: {role: web}}
spec: {profile: base, interfaces: [{mac: '52:54:00:77:00:01', ip: %[1]s.21, hostname: web-1}]}
---
kind: Machine
metadata: {name: web-2, labels: {role: web}}
spec: {profile: base, interfaces: [{mac: '%[3]s'}]}
`, fixtureNet, iface, fixtureClientMAC)
	if v >= secretsSince {
		m += "---\nkind: Secret\nmetadata: {name: db-password}\nspec: {machines: [web-1]}\n"
	}
	if v >= joinTokensSince {
		m += "---\nkind: JoinToken\nmetadata: {name: jt-1}\nspec: {profile: base, maxUses: 3}\n"
	}
	return m
}

// TestSchemaFixtures checks there is a fixture of every schema version up to
// this binary's, for both engines, and with -update-schema-fixtures writes them.
func TestSchemaFixtures(t *testing.T) {
	latest := sqlite.LatestSchemaVersion()
	if pl := postgres.LatestSchemaVersion(); pl != latest {
		t.Fatalf("SQLite migrates to schema %d, PostgreSQL to %d: the engines' migrations must stay in step", latest, pl)
	}
	bins := map[int64]string{}
	for _, kv := range strings.Split(*kilnForSchema, ",") {
		if kv == "" {
			continue
		}
		n, path, ok := strings.Cut(kv, "=")
		v, err := strconv.ParseInt(n, 10, 64)
		if !ok || err != nil || v < 1 || v > latest {
			t.Fatalf("-kiln-for-schema %q: want N=PATH with 1 <= N <= %d", kv, latest)
		}
		bins[v] = path
	}
	for v := int64(1); v <= latest; v++ {
		db := filepath.Join(fixtureDir, fmt.Sprintf("sqlite-v%d.db", v))
		dump := filepath.Join(fixtureDir, fmt.Sprintf("postgres-v%d.sql", v))
		_, err := os.Stat(db)
		missing := errors.Is(err, fs.ErrNotExist)
		if *updateSchemaFixtures && (missing || bins[v] != "") {
			bin := bins[v]
			if bin == "" && v == latest {
				bin = testkit.KilnBinary(t)
			}
			if bin == "" {
				t.Fatalf("schema %d has no fixture: build the last Kiln with that schema and pass -kiln-for-schema %d=PATH", v, v)
			}
			makeFixtures(t, bin, v, db, dump)
		}
		for _, f := range []string{db, dump} {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("no fixture of schema version %d: %v (see fixtures_test.go)", v, err)
			}
		}
	}
}

// makeFixtures runs bin's kiln serve on SQLite and on PostgreSQL, drives it,
// and keeps a snapshot of each database.
func makeFixtures(t *testing.T, bin string, v int64, db, dump string) {
	t.Helper()
	testkit.NeedRoot(t, "network namespaces, DHCP on port 67")
	testkit.NeedTool(t, "dhclient", "isc-dhcp-client")
	testkit.NeedTool(t, "pg_dump", "postgresql-client")
	ns, hostIf, nsIf := fixtureNetns(t)

	dir := t.TempDir()
	runFixtureServer(t, bin, v, dir, "", ns, hostIf, nsIf)
	os.Remove(db)
	if err := sqlite.Snapshot(context.Background(), filepath.Join(dir, sqlite.FileName), db); err != nil {
		t.Fatal(err)
	}
	os.Chmod(db, 0o644)

	url := pgtest.NewDatabase(t)
	runFixtureServer(t, bin, v, t.TempDir(), url, ns, hostIf, nsIf)
	out, err := exec.Command("pg_dump", "--no-owner", "--no-privileges", "--dbname", url).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	if err := os.WriteFile(dump, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("schema %d: wrote %s and %s with %s", v, db, dump, bin)
}

// fixtureNetns makes a namespace and a veth pair (the client's end with the
// fixture client's MAC); both go when the test ends.
func fixtureNetns(t *testing.T) (ns, hostIf, nsIf string) {
	t.Helper()
	pid := os.Getpid() % 10000
	ns, hostIf, nsIf = fmt.Sprintf("kiln-fix-%d", pid), fmt.Sprintf("kfh%d", pid), fmt.Sprintf("kfc%d", pid)
	cleanup := func() {
		_ = exec.Command("ip", "netns", "del", ns).Run()
		_ = exec.Command("ip", "link", "del", hostIf).Run()
	}
	cleanup()
	t.Cleanup(cleanup)
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", ns},
		{"addr", "add", fixtureNet + ".1/24", "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"-n", ns, "link", "set", nsIf, "address", fixtureClientMAC},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "set", nsIf, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return ns, hostIf, nsIf
}

// runFixtureServer starts bin's kiln serve in dir (on database, if set), makes
// the fixture's objects, tokens, secret and a DHCP lease, and stops it.
func runFixtureServer(t *testing.T, bin string, v int64, dir, database, ns, hostIf, nsIf string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if v >= secretsSince {
		kek, err := os.ReadFile(filepath.Join(fixtureDir, "test-kek.hex"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "kek.key"), kek, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--tftp-listen=", "--dhcp-interface", hostIf}
	if v >= secretsSince { // the HTTPS listener came with enrollment
		args = append(args, "--https-listen=127.0.0.1:0")
	}
	if database != "" {
		args = append(args, "--database", database)
	}
	serve := exec.Command(bin, args...)
	serve.Env = testkit.CleanEnv()
	var log strings.Builder
	serve.Stdout, serve.Stderr = &log, &log
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = serve.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = serve.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = serve.Process.Kill()
			<-done
		}
	}
	defer func() {
		stop()
		if t.Failed() {
			t.Logf("kiln serve (%s) log:\n%s", bin, log.String())
		}
	}()
	waitServerURL(t, dir)
	kiln := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--data-dir", dir}, args...)...)
		cmd.Env = testkit.CleanEnv()
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kiln %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	kiln(fixtureManifests(v, hostIf), "apply", "-f", "-")
	kiln("", "api-token", "create", "--role", "viewer", "--name", "ci")
	if v >= secretsSince {
		kiln("", "secret", "set", "db-password", "--from-literal", fixtureSecret)
	}
	if got := dhclientLease(t, ns, nsIf); got != fixtureLeaseIP {
		t.Fatalf("dhclient got %q from the schema %d Kiln, want %s", got, v, fixtureLeaseIP)
	}
	// The DHCP timeline events are written asynchronously; a moment for them.
	time.Sleep(time.Second)
	stop()
}

func waitServerURL(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(filepath.Join(dir, "server.url")); err == nil {
			if resp, err := http.Get(strings.TrimSpace(string(b)) + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("kiln serve was not ready within 30s")
}

// dhclientLease runs ISC dhclient on iface in ns until it is bound and returns
// the address it got (its script only records, the interface is left alone).
func dhclientLease(t *testing.T, ns, iface string) string {
	t.Helper()
	dir := t.TempDir()
	events := filepath.Join(dir, "events")
	script := "#!/bin/sh\necho \"$reason $new_ip_address\" >> " + events + "\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, "script"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf"), []byte("send host-name \"web-2\";\ntimeout 20;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "dhclient", "-4", "-d", "-v",
		"-cf", filepath.Join(dir, "conf"), "-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"),
		"-sf", filepath.Join(dir, "script"), iface)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	for ctx.Err() == nil {
		b, _ := os.ReadFile(events)
		for _, line := range strings.Split(string(b), "\n") {
			if addr, ok := strings.CutPrefix(line, "BOUND "); ok {
				return addr
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("dhclient was not bound within 30s:\n%s", out.String())
	return ""
}
