package testkit

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ServeOptions say how Serve starts `kiln serve`. The zero value is a server on a
// free loopback port with a fresh data dir, no TFTP, no HTTPS.
type ServeOptions struct {
	// DataDir is the server's --data-dir; a new temporary one when empty. A second
	// Serve on the same dir is a restart.
	DataDir string
	// Args are more flags for `kiln serve`. Unless they, Env or a --config set the
	// listener, it is --listen 127.0.0.1:0 and the URL is read from server.url.
	Args []string
	// Env are more KILN_* variables; the caller's own KILN_* are never passed on.
	Env []string
	// HTTPS adds Kiln's HTTPS listener on a free loopback port, with 127.0.0.1 as
	// its certificate's name (enrollment, the agent API).
	HTTPS bool
	// Command makes the process for a kiln command line (args[0] is the binary),
	// e.g. inside a network namespace. Its Env is kept if set. Default exec.Command.
	Command func(ctx context.Context, args ...string) *exec.Cmd
	// URL, when the listener is a fixed address in Args, is where the server answers
	// (server.url then holds the listener, which may not be reachable as written).
	URL string
	// HTTPClient reaches the server (e.g. dialing inside a namespace); default
	// http.DefaultClient.
	HTTPClient *http.Client
	// Ready is how long start-up may take; default 30 s.
	Ready time.Duration
	// LogFile is where the log is written (e.g. to keep it as a CI artifact);
	// default a file in a temporary dir.
	LogFile string
}

// Server is a running `kiln serve`.
type Server struct {
	// URL is the HTTP listener's base URL (API, boot endpoints, /metrics).
	URL string
	// HTTPSAddr and HTTPSURL are set with ServeOptions.HTTPS.
	HTTPSAddr, HTTPSURL string
	// DataDir holds the database, the CA, server.url and admin.token.
	DataDir string
	// AdminToken is the bootstrap admin token the server wrote on first start (empty
	// when another replica made it).
	AdminToken string
	// Log is the server's stdout and stderr.
	Log *ServerLog

	tb   testing.TB
	opts ServeOptions
	cmd  *exec.Cmd
	done chan struct{}
	bin  string
}

// ServerLog is a server's stdout and stderr, in a file the child writes directly:
// without a copying goroutine in between, whatever the server logged before it
// answered a request is in the file when the answer arrives.
type ServerLog struct{ path string }

// Path is the log file's path.
func (l *ServerLog) Path() string { return l.path }

func (l *ServerLog) String() string {
	b, err := os.ReadFile(l.path)
	if err != nil {
		return fmt.Sprintf("(read kiln serve's log: %v)", err)
	}
	return string(b)
}

// Tail is the last n lines of the log.
func (l *ServerLog) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Serve starts `kiln serve` and waits until /readyz answers 200. The server is
// stopped when tb ends; if tb failed, the tail of its log is logged then.
func Serve(tb testing.TB, opts ServeOptions) *Server {
	tb.Helper()
	s := &Server{
		DataDir: opts.DataDir,
		Log:     &ServerLog{path: cmp.Or(opts.LogFile, filepath.Join(tb.TempDir(), "kiln.log"))},
		tb:      tb,
		opts:    opts,
		done:    make(chan struct{}),
		bin:     KilnBinary(tb),
	}
	if s.DataDir == "" {
		s.DataDir = filepath.Join(tb.TempDir(), "data")
	}
	os.Remove(filepath.Join(s.DataDir, "server.url")) // a previous run's
	args := []string{s.bin, "serve", "--data-dir", s.DataDir, "--tftp-listen="}
	if opts.HTTPS {
		s.HTTPSAddr = FreeAddr(tb)
		s.HTTPSURL = "https://" + s.HTTPSAddr
		args = append(args, "--https-listen="+s.HTTPSAddr, "--server-san=127.0.0.1")
	} else {
		args = append(args, "--https-listen=127.0.0.1:0")
	}
	args = append(args, opts.Args...)
	if !setsListener(opts.Args, opts.Env) {
		args = append(args, "--listen", "127.0.0.1:0")
	}
	s.cmd = s.Command(context.Background(), args...)
	s.cmd.Env = append(s.cmd.Env, opts.Env...)
	logFile, err := os.Create(s.Log.path)
	if err != nil {
		tb.Fatalf("create kiln serve's log file: %v", err)
	}
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	err = s.cmd.Start()
	logFile.Close() // the child has its own descriptor
	if err != nil {
		tb.Fatalf("start kiln serve: %v", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			tb.Logf("kiln serve log (%s, last 80 lines):\n%s", s.Log.Path(), s.Log.Tail(80))
		}
	})
	s.waitReady()
	if b, err := os.ReadFile(filepath.Join(s.DataDir, "admin.token")); err == nil {
		s.AdminToken = strings.TrimSpace(string(b))
	}
	return s
}

func (s *Server) waitReady() {
	s.tb.Helper()
	client := cmp.Or(s.opts.HTTPClient, http.DefaultClient)
	limit := cmp.Or(s.opts.Ready, 30*time.Second)
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			s.tb.Fatalf("kiln serve exited during start-up (%v); log:\n%s", s.cmd.ProcessState, s.Log.Tail(40))
		default:
		}
		url := s.opts.URL
		if url == "" {
			b, err := os.ReadFile(filepath.Join(s.DataDir, "server.url"))
			url = strings.TrimSpace(string(b))
			last = err
		}
		if url != "" {
			resp, err := client.Get(url + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					s.URL = url
					return
				}
				err = fmt.Errorf("/readyz: %s", resp.Status)
			}
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.tb.Fatalf("kiln serve not ready within %v (last: %v); log:\n%s", limit, last, s.Log.Tail(40))
}

// setsListener: the caller chose the HTTP listener (or a config file may have).
func setsListener(args, env []string) bool {
	for _, a := range slices.Concat(args, env) {
		if strings.HasPrefix(a, "--listen") || strings.HasPrefix(a, "KILN_LISTEN=") || strings.HasPrefix(a, "--config") {
			return true
		}
	}
	return false
}

// Command makes a kiln process (args[0] is the binary) the way the options say,
// with the caller's KILN_* variables removed so that tests see only their own.
func (s *Server) Command(ctx context.Context, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if s.opts.Command != nil {
		cmd = s.opts.Command(ctx, args...)
	} else {
		cmd = exec.CommandContext(ctx, args[0], args[1:]...)
	}
	if cmd.Env == nil {
		cmd.Env = CleanEnv()
	}
	return cmd
}

// CleanEnv is the environment without the caller's KILN_* variables.
func CleanEnv() []string {
	var out []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KILN_") {
			out = append(out, e)
		}
	}
	return out
}

// Kiln runs the CLI against the server's data dir (which holds its URL and the
// admin token), with stdin. The error carries the command and its stderr.
func (s *Server) Kiln(stdin string, args ...string) (string, error) {
	cmd := s.Command(context.Background(), append([]string{s.bin, "--data-dir", s.DataDir}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String() + errb.String(), fmt.Errorf("kiln %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// MustKiln is Kiln that fails the test on an error.
func (s *Server) MustKiln(stdin string, args ...string) string {
	s.tb.Helper()
	out, err := s.Kiln(stdin, args...)
	if err != nil {
		s.tb.Fatal(err)
	}
	return out
}

// Signal sends sig and waits up to 20 s for the server to exit (then kills it).
// Its result is the exit's error; nil when the server had already exited.
func (s *Server) Signal(sig syscall.Signal) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
		if !s.cmd.ProcessState.Success() {
			return fmt.Errorf("kiln serve: %v", s.cmd.ProcessState)
		}
		return nil
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("kiln serve did not exit within 20s of %v", sig)
	}
}

// PID is the server process's id (to read its memory from /proc in benchmarks).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop ends the server: SIGTERM, then SIGKILL after 10 s. It is idempotent.
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// FreeAddr is a loopback address with a port that was free a moment ago, for
// listeners whose address the test must know before the server starts.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
