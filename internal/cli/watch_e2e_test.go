package cli_test

import (
	"bufio"
	"context"
	"fmt"
	"hash/fnv"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/watch"
)

// sseClient is one stream opened by a test; it is closed when the test ends.
type sseClient struct {
	t    *testing.T
	resp *http.Response
	d    *watch.Decoder
	msgs chan watch.Received
}

func openStream(t *testing.T, url, token, lastID string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	c := &sseClient{t: t, resp: resp, d: watch.NewDecoder(resp.Body), msgs: make(chan watch.Received, 100)}
	go func() {
		defer close(c.msgs)
		for {
			m, err := c.d.Next()
			if err != nil {
				return
			}
			c.msgs <- m
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return c
}

// next returns the next message's event type and object name.
func (c *sseClient) next() (watch.Received, string) {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatal("the stream ended")
		}
		name := ""
		if i := strings.Index(m.Data, `"name":"`); i >= 0 {
			name, _, _ = strings.Cut(m.Data[i+len(`"name":"`):], `"`)
		}
		return m, name
	case <-time.After(15 * time.Second):
		c.t.Fatal("no message within 15 s")
	}
	return watch.Received{}, ""
}

func machineYAML(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		h := fnv.New32a()
		h.Write([]byte(n))
		v := h.Sum32()
		fmt.Fprintf(&b, "---\nkind: Machine\nmetadata: {name: %s}\nspec: {interfaces: [{mac: '52:54:%02x:%02x:%02x:%02x'}]}\n", n, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return b.String()
}

// TestWatchAcrossRestart: a stream resumed with Last-Event-ID after `kiln serve`
// stopped and started again on the same data dir gets exactly the writes after
// the last id it saw, including those made while it was away; `kiln get
// machines -w` reconnects by itself and prints every machine once.
func TestWatchAcrossRestart(t *testing.T) {
	testkit.Slow(t, "starts kiln serve twice")
	dir := filepath.Join(t.TempDir(), "data")
	addr := testkit.FreeAddr(t)
	serve := func() *testkit.Server {
		return testkit.Serve(t, testkit.ServeOptions{DataDir: dir, Args: []string{"--listen", addr}, URL: "http://" + addr})
	}
	s := serve()
	tok := s.AdminToken
	s.MustKiln(machineYAML("m1"), "apply", "-f", "-")

	// The CLI follows the machines from the start.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cli := exec.CommandContext(ctx, testkit.KilnBinary(t), "--server", "http://"+addr, "--token", tok, "get", "machines", "-w", "-o", "name")
	cli.Env = testkit.CleanEnv()
	out, err := cli.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cli.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expectLine := func(want string) {
		t.Helper()
		select {
		case l := <-lines:
			if l != want {
				t.Fatalf("kiln get machines -w printed %q; want %q", l, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("kiln get machines -w did not print %q within 20 s", want)
		}
	}
	expectLine("machine/m1")

	stream := openStream(t, "http://"+addr+"/api/v1/machines?watch=1", tok, "")
	if m, name := stream.next(); m.Event != "ADDED" || name != "m1" || m.ID != "" {
		t.Fatalf("snapshot: %+v; want m1 ADDED without an id", m)
	}
	s.MustKiln(machineYAML("m2"), "apply", "-f", "-")
	m2, name := stream.next()
	if m2.Event != "ADDED" || name != "m2" || m2.ID == "" {
		t.Fatalf("live: %+v; want m2 ADDED with an id", m2)
	}
	expectLine("machine/m2")
	s.MustKiln(machineYAML("m3"), "apply", "-f", "-") // the test's stream does not read it before the stop

	s.Stop()
	s = serve()
	s.MustKiln(machineYAML("m4"), "apply", "-f", "-")
	resumed := openStream(t, "http://"+addr+"/api/v1/machines?watch=1", tok, m2.ID)
	var got []string
	last := m2.ID
	for range 2 {
		m, name := resumed.next()
		if m.ID <= last && len(m.ID) <= len(last) {
			t.Errorf("id %s after %s: not increasing", m.ID, last)
		}
		last = m.ID
		got = append(got, m.Event+" "+name)
	}
	if strings.Join(got, ",") != "ADDED m3,ADDED m4" {
		t.Errorf("resumed after the restart from m2's id: %v; want ADDED m3, ADDED m4", got)
	}
	expectLine("machine/m3")
	expectLine("machine/m4")
	select {
	case m := <-resumed.msgs:
		t.Errorf("a message more than the writes: %+v", m)
	case l := <-lines:
		t.Errorf("kiln get machines -w printed more than the writes: %q", l)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestWatchAcrossPostgresReplicas: two `kiln serve` on one PostgreSQL database;
// a watcher on replica 2 gets what was written through replica 1, in order, and
// a client that moves to replica 1 with the last id replica 2 gave it continues
// with exactly what followed (the ids come from the database, so they are the
// same on every replica).
func TestWatchAcrossPostgresReplicas(t *testing.T) {
	testkit.Slow(t, "starts two kiln serve on PostgreSQL")
	url := pgtest.NewDatabase(t)
	dir1 := t.TempDir()
	r1 := startServer(t, dir1, nil, "--database", url)
	r2 := startServer(t, t.TempDir(), nil, "--database", url, "--kek-file", filepath.Join(dir1, "kek.key"))
	tokb, err := os.ReadFile(filepath.Join(dir1, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokb))

	on2 := openStream(t, r2.URL+"/api/v1/machines?watch=1", tok, "")
	r1.MustKiln(machineYAML("a1", "a2"), "apply", "-f", "-")
	first, n1 := on2.next()
	if _, n2 := on2.next(); n1 != "a1" || n2 != "a2" || first.Event != "ADDED" {
		t.Fatalf("replica 2's watcher got %s %s, %s; want ADDED a1, a2", first.Event, n1, n2)
	}
	// The client leaves replica 2 after a1; more is written through replica 2.
	apply2 := exec.Command(testkit.KilnBinary(t), "--server", r2.URL, "--token", tok, "apply", "-f", "-")
	apply2.Env = testkit.CleanEnv()
	apply2.Stdin = strings.NewReader(machineYAML("b1"))
	if out, err := apply2.CombinedOutput(); err != nil {
		t.Fatalf("apply through replica 2: %v %s", err, out)
	}
	on1 := openStream(t, r1.URL+"/api/v1/machines?watch=1", tok, first.ID)
	var got []string
	for range 2 {
		_, name := on1.next()
		got = append(got, name)
	}
	if strings.Join(got, ",") != "a2,b1" {
		t.Errorf("on replica 1 after a1's id from replica 2: %v; want a2, b1", got)
	}
	select {
	case m := <-on1.msgs:
		t.Errorf("a message more than the writes: %+v", m)
	case <-time.After(700 * time.Millisecond): // more than a poll interval
	}
}

// followLines starts a kiln command that follows something and returns its
// stdout lines; it is stopped when the test ends.
func followLines(t *testing.T, s *testkit.Server, args ...string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, testkit.KilnBinary(t), append([]string{"--data-dir", s.DataDir}, args...)...)
	cmd.Env = testkit.CleanEnv()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines
}

// waitLine waits for a line containing want; the lines before it are returned.
func waitLine(t *testing.T, lines <-chan string, want string) []string {
	t.Helper()
	var seen []string
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the command ended before printing %q (printed %q)", want, seen)
			}
			if strings.Contains(l, want) {
				return seen
			}
			seen = append(seen, l)
		case <-timeout:
			t.Fatalf("no line with %q within 20 s (printed %q)", want, seen)
		}
	}
}

// TestLogsFollowAndDescribeWatch: `kiln logs machine NAME -f` prints the agent
// log lines written after it started (here by a second store on the server's
// SQLite file, as another process would: the server finds them by polling), each
// once, and `kiln describe machine NAME --watch` adds every new event to the
// timeline.
func TestLogsFollowAndDescribeWatch(t *testing.T) {
	s := startServer(t, filepath.Join(t.TempDir(), "data"), nil)
	s.MustKiln(machineYAML("web-1"), "apply", "-f", "-")
	st := testkit.OpenSQLite(t, s.DataDir)
	add := func(typ, msg string) {
		t.Helper()
		if err := st.Update(context.Background(), func(tx store.Tx) error {
			return tx.AddEvent(context.Background(), &store.Event{Machine: "web-1", Type: typ, Message: msg})
		}); err != nil {
			t.Fatal(err)
		}
	}
	add("AgentLog", "before the follow")
	logs := followLines(t, s, "logs", "machine", "web-1", "-f")
	waitLine(t, logs, "before the follow")
	desc := followLines(t, s, "describe", "machine", "web-1", "--watch")
	waitLine(t, desc, "Events:")
	time.Sleep(300 * time.Millisecond) // both are following now
	add("dhcp", "not a log line")
	add("AgentLog", "line one")
	add("AgentLog", "line two")
	if before := waitLine(t, logs, "line one"); len(before) != 0 {
		t.Errorf("logs -f printed %q before line one (a dhcp event or a repeat)", before)
	}
	waitLine(t, logs, "line two")
	waitLine(t, desc, "not a log line")
	waitLine(t, desc, "line two")
}
