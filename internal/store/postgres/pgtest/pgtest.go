// Package pgtest gives tests fresh, empty PostgreSQL databases: on the server named by
// KILN_TEST_DATABASE_URL, or else on a throwaway server started from the local
// PostgreSQL installation (Debian's postgresql package, /usr/lib/postgresql/*/bin).
//
// Use it from a package's tests like this:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		url := pgtest.NewDatabase(t) // dropped when t ends
//		...
//	}
//
// The throwaway server is started on first use, shared by the package's tests, and
// stopped (its files removed) by Main. It listens only on a Unix socket in its own
// temporary directory and runs with fsync off: it is for tests only. Without the
// PostgreSQL tools, NewDatabase skips the test, unless CI=true, where it fails it
// (testkit.Missing); under -short it skips unless KILN_TEST_DATABASE_URL is set.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/kilnhq/kiln/internal/testkit"
)

// EnvURL names the environment variable with the URL of a server to use instead of a
// throwaway one, e.g. postgres://kiln:secret@localhost:5432/postgres. Its user must be
// allowed to create databases.
const EnvURL = "KILN_TEST_DATABASE_URL"

// BinDirEnv names an optional environment variable with the directory of initdb and
// postgres, when they are not under /usr/lib/postgresql/*/bin or on PATH.
const BinDirEnv = "KILN_TEST_PG_BIN"

// The test binary's one server. This is the only package-level state, and it belongs
// to a test helper: tests of a package share one server, started on first use.
var shared struct {
	mu      sync.Mutex
	started bool
	srv     *server
	err     error
}

// Main runs m's tests, then stops the throwaway server if one was started. Its result
// is the exit code for os.Exit.
func Main(m *testing.M) int {
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		if err := shared.srv.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
		shared.srv = nil
	}
	return code
}

// NewDatabase creates an empty database for tb and returns its URL. The database is
// dropped when tb ends (close what uses it first: cleanups registered later run first).
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	if os.Getenv(EnvURL) == "" {
		testkit.Slow(tb, "starts a throwaway PostgreSQL server")
	}
	srv, err := get()
	if err != nil {
		var miss *missingError
		if errors.As(err, &miss) {
			testkit.Missing(tb, "PostgreSQL to test with: %v (set %s, or install PostgreSQL)", err, EnvURL)
		}
		tb.Fatalf("pgtest: %v", err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "kiln_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := srv.admin.ExecContext(ctx, "CREATE DATABASE "+name+srv.createOpts); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := srv.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return srv.url(name)
}

// missingError: the tools to start a server are not installed.
type missingError struct{ what string }

func (e *missingError) Error() string { return e.what }

func get() (*server, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.started {
		shared.started = true
		shared.srv, shared.err = start()
	}
	if shared.err == nil && shared.srv == nil {
		return nil, errors.New("the server was stopped: NewDatabase called after pgtest.Main's tests ended")
	}
	return shared.srv, shared.err
}

// server is a PostgreSQL server: a throwaway one (cmd != nil) or the one of EnvURL.
type server struct {
	admin      *sql.DB // the maintenance database, to create and drop databases
	base       *url.URL
	createOpts string // CREATE DATABASE options

	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
}

func (s *server) url(db string) string {
	u := *s.base
	u.Path = "/" + db
	u.RawPath = ""
	return u.String()
}

func start() (*server, error) {
	if env := os.Getenv(EnvURL); env != "" {
		return external(env)
	}
	return throwaway()
}

func external(raw string) (*server, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("%s is not a postgres:// URL", EnvURL)
	}
	db, err := sql.Open("pgx", raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvURL, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s (%s): %w", EnvURL, u.Redacted(), err)
	}
	return &server{admin: db, base: u, createOpts: " TEMPLATE template0"}, nil
}

// findBin finds the directory with initdb and postgres: $KILN_TEST_PG_BIN, the
// newest /usr/lib/postgresql/<version>/bin, or PATH.
func findBin() (string, error) {
	has := func(dir string) bool {
		for _, tool := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, tool)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("%s=%s has no initdb and postgres", BinDirEnv, dir)
		}
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", &missingError{"initdb and postgres not found under /usr/lib/postgresql/*/bin nor on PATH"}
}

// throwaway initializes and starts a server in a new temporary directory.
func throwaway() (srv *server, err error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	// PostgreSQL refuses to run as root: run it as the postgres user then.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, &missingError{"running as root and there is no postgres user to run the server as"}
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)} // and no supplementary groups
	}
	dir, err := os.MkdirTemp("", "kiln-pgtest-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	command := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = []string{"LC_ALL=C", "PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return cmd
	}
	initdb := command("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	const port = "5432"   // only names the socket, in our own directory
	cmd := command("postgres", "-D", data, "-k", dir, "-p", port,
		"-c", "listen_addresses=", // no TCP
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=128MB",
		"-c", "log_min_messages=warning")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If the test binary dies without Main's cleanup, the server goes with it.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	srv = &server{cmd: cmd, exited: make(chan struct{}), dir: dir,
		base: &url.URL{Scheme: "postgres", Path: "/postgres",
			RawQuery: url.Values{"host": {dir}, "port": {port}, "user": {"postgres"}, "sslmode": {"disable"}}.Encode()}}
	go func() {
		_ = cmd.Wait()
		close(srv.exited)
	}()
	defer func() {
		if err != nil {
			_ = srv.stop()
		}
	}()
	if srv.admin, err = sql.Open("pgx", srv.url("postgres")); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := srv.admin.PingContext(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-srv.exited:
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres exited: %s", strings.TrimSpace(string(log)))
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("postgres did not accept connections within a minute: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// FILE_COPY (PostgreSQL 15+) copies the template's files instead of logging every
	// block: much faster for a server without fsync.
	var version int
	if err := srv.admin.QueryRow(`SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return nil, err
	}
	srv.createOpts = " TEMPLATE template0"
	if version >= 150000 {
		srv.createOpts += " STRATEGY FILE_COPY"
	}
	return srv, nil
}

// stop stops a throwaway server (fast shutdown) and removes its files.
func (s *server) stop() error {
	if s.admin != nil {
		s.admin.Close()
	}
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("remove %s: %w", s.dir, err)
	}
	return nil
}
