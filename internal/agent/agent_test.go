package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/workflow"
)

// testKiln is the real server side of the agent API (workflow.Engine and AgentAPI
// on the SQLite store) on a fixed address, so that it can be stopped and started
// again like a restarted Kiln. Machine identity, which mTLS gives in production,
// is fixed to web-1.
type testKiln struct {
	t       *testing.T
	dir     string
	addr    string
	st      store.Store
	eng     *workflow.Engine
	srv     *http.Server
	mu      sync.Mutex
	reports []reportSeen
	down    atomic.Bool // answer 503 to everything
}

type reportSeen struct {
	action string
	state  string
	code   int
}

func startKiln(t *testing.T, manifests string) *testKiln {
	k := &testKiln{t: t, dir: t.TempDir()}
	k.start()
	if _, err := testkit.Apply(context.Background(), &inventory.Service{Store: k.st}, manifests); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.stop)
	return k
}

func (k *testKiln) start() {
	// Opened again on the same dir after stop, like a restarted Kiln.
	k.st = testkit.OpenSQLite(k.t, k.dir)
	k.eng = &workflow.Engine{Store: k.st}
	mux := http.NewServeMux()
	(&workflow.AgentAPI{Engine: k.eng, Identity: func(*http.Request) (string, bool) { return "web-1", true }}).Register(mux)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if k.down.Load() {
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		var rep workflow.Report
		if strings.Contains(r.URL.Path, "/actions/") {
			body := new(bytes.Buffer)
			body.ReadFrom(r.Body)
			jsonUnmarshal(body.Bytes(), &rep)
			r.Body = readCloser{bytes.NewReader(body.Bytes())}
		}
		mux.ServeHTTP(rec, r)
		if strings.Contains(r.URL.Path, "/actions/") {
			k.mu.Lock()
			k.reports = append(k.reports, reportSeen{action: r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:], state: rep.State, code: rec.code})
			k.mu.Unlock()
		}
	})
	var ln net.Listener
	var err error
	addr := k.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	for i := 0; ; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil || i > 50 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		k.t.Fatal(err)
	}
	k.addr = ln.Addr().String()
	k.srv = &http.Server{Handler: h}
	go k.srv.Serve(ln)
}

func (k *testKiln) stop() {
	if k.srv != nil {
		k.srv.Close()
		k.srv = nil
		k.st.Close()
	}
}

func (k *testKiln) url() string { return "http://" + k.addr }

func (k *testKiln) startWorkflow(template string) string {
	wf, err := k.eng.Start(context.Background(), "test", "web-1", template)
	if err != nil {
		k.t.Fatal(err)
	}
	return wf.Metadata.Name
}

func (k *testKiln) status(name string) *workflow.Status {
	var st *workflow.Status
	err := k.st.View(context.Background(), func(tx store.Tx) error {
		wf, err := tx.Get(context.Background(), "Workflow", name)
		if err != nil {
			return err
		}
		st, err = workflow.StatusOf(wf)
		return err
	})
	if err != nil {
		k.t.Fatal(err)
	}
	return st
}

func (k *testKiln) action(name, action string) workflow.ActionStatus {
	for _, a := range k.status(name).Actions {
		if a.Name == action {
			return a
		}
	}
	k.t.Fatalf("workflow %s has no action %s", name, action)
	return workflow.ActionStatus{}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func jsonUnmarshal(b []byte, v any) { json.Unmarshal(b, v) }

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// fakePower records what the agent asked of the machine's power.
type fakePower struct {
	mu                   sync.Mutex
	reboots, poweroffs   int
	kexecLoads, kexecs   int
	kexecLoadErr         error
	kexecCmdline         string
	kernelSize, initSize int64
}

func (p *fakePower) Reboot() error   { p.mu.Lock(); p.reboots++; p.mu.Unlock(); return nil }
func (p *fakePower) PowerOff() error { p.mu.Lock(); p.poweroffs++; p.mu.Unlock(); return nil }
func (p *fakePower) Kexec() error    { p.mu.Lock(); p.kexecs++; p.mu.Unlock(); return nil }
func (p *fakePower) KexecLoad(kernel, initrd *os.File, cmdline string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kexecLoadErr != nil {
		return p.kexecLoadErr
	}
	p.kexecLoads++
	p.kexecCmdline = cmdline
	if st, err := kernel.Stat(); err == nil {
		p.kernelSize = st.Size()
	}
	if initrd != nil {
		if st, err := initrd.Stat(); err == nil {
			p.initSize = st.Size()
		}
	}
	return nil
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newTestAgent(t *testing.T, k *testKiln, power Power) *Agent {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return &Agent{
		Transport:         StaticTransport{URL: k.url()},
		System:            &System{AllowRegularFiles: true, Power: power},
		Dir:               t.TempDir(),
		Logger:            slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: level})),
		Backoff:           Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		RetryBackoff:      Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		ProgressInterval:  50 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond,
		PollInterval:      100 * time.Millisecond,
		RequestTimeout:    2 * time.Second,
		Facts:             func(context.Context) (map[string]any, error) { return map[string]any{"cpus": 2}, nil },
	}
}

// agentManifests: artifacts served by img, templates for each scenario.
func agentManifests(img *imageServer, disk, mark string, good []byte) string {
	zst := compressBytes(CompressionZstd, good)
	img.files["img.zst"] = zst
	img.files["bad.raw"] = good
	goodSum, zstSum := sum(good), sum(zst)
	return fmt.Sprintf(`
kind: Artifact
metadata: {name: slow-image}
spec: {source: "%[1]s/slow/img.zst", sha256: "%[2]s"}
---
kind: Artifact
metadata: {name: missing-image}
spec: {source: "%[1]s/nothing-here.raw", sha256: "%[3]s"}
---
kind: Artifact
metadata: {name: truncated-image}
spec: {source: "%[1]s/truncated/img.zst", sha256: "%[2]s"}
---
kind: Artifact
metadata: {name: wrong-image}
spec: {source: "%[1]s/bad.raw", sha256: "%[2]s"}
---
kind: Template
metadata: {name: install}
spec:
  actions:
    - {name: one, type: exec, args: {command: "echo one >> %[5]s"}}
    - {name: image, type: image2disk, timeout: 1m, args: {image: slow-image, disk: "%[4]s"}}
    - {name: three, type: exec, args: {command: "echo three >> %[5]s"}}
    - {name: reboot, type: reboot}
---
kind: Template
metadata: {name: retry}
spec:
  actions:
    - name: flaky
      type: exec
      retries: 2
      args: {command: "n=$(cat %[5]s.count 2>/dev/null || echo 0); n=$((n+1)); echo $n > %[5]s.count; echo try $n; [ $n -ge 2 ]"}
---
kind: Template
metadata: {name: slow-exec}
spec:
  actions:
    - {name: sleep, type: exec, timeout: 1s, args: {command: "echo sleeping; sleep 30"}}
---
kind: Template
metadata: {name: long}
spec:
  actions:
    - {name: sleep, type: exec, timeout: 1m, args: {command: "sleep 20"}}
---
kind: Template
metadata: {name: image-404}
spec:
  actions: [{name: image, type: image2disk, retries: 1, args: {image: missing-image, disk: "%[4]s"}}]
---
kind: Template
metadata: {name: image-truncated}
spec:
  actions: [{name: image, type: image2disk, args: {image: truncated-image, disk: "%[4]s"}}]
---
kind: Template
metadata: {name: image-mismatch}
spec:
  actions: [{name: image, type: image2disk, args: {image: wrong-image, disk: "%[4]s"}}]
---
kind: Template
metadata: {name: power}
spec:
  actions:
    - {name: kexec, type: kexec, args: {kernelURL: "%[1]s/img.zst", kernelSHA256: "%[2]s", cmdline: "console=ttyS0"}}
---
kind: Profile
metadata: {name: p}
spec: {boot: {agent: true}, workflow: install}
---
kind: Machine
metadata: {name: web-1}
spec: {profile: p, interfaces: [{mac: "52:54:00:00:00:01"}]}
`, img.URL, zstSum, goodSum, disk, mark)
}

func compressBytes(comp string, data []byte) []byte { return compress(nilTB{}, comp, data) }

type nilTB struct{ testing.TB }

type scenario struct {
	k     *testKiln
	img   *imageServer
	disk  string
	mark  string
	image []byte
	power *fakePower
}

func newScenario(t *testing.T) *scenario {
	s := &scenario{img: newImageServer(t), disk: diskFile(t, 16<<20), mark: filepath.Join(t.TempDir(), "mark"), image: testImage(6 << 20), power: &fakePower{}}
	s.k = startKiln(t, agentManifests(s.img, s.disk, s.mark, s.image))
	return s
}

func (s *scenario) marks() string {
	b, _ := os.ReadFile(s.mark)
	return string(b)
}

func TestAgentRunsWorkflowAcrossKilnRestart(t *testing.T) {
	s := newScenario(t)
	k := s.k
	name := k.startWorkflow("install")
	a := newTestAgent(t, k, s.power)
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background(), true) }()

	// Once the image is streaming, restart Kiln, and keep it down for a while: the
	// agent goes on writing, then holds its result until Kiln is back.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if p := k.action(name, "image").Progress; p != nil && p.Bytes > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the image action never reported progress")
		}
		time.Sleep(20 * time.Millisecond)
	}
	k.stop()
	time.Sleep(1500 * time.Millisecond) // the slow download (~1.2 s) ends while Kiln is away
	k.start()
	k.down.Store(true) // up, but answering 503 for a bit, like a Kiln opening its store
	time.Sleep(300 * time.Millisecond)
	k.down.Store(false)

	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not finish")
	}
	st := k.status(name)
	if st.State != workflow.Succeeded {
		t.Fatalf("workflow %s: %s", st.State, st.Message)
	}
	for _, act := range st.Actions {
		if act.State != workflow.Succeeded || act.Attempts != 1 {
			t.Errorf("action %s: %s, %d attempts (%s)", act.Name, act.State, act.Attempts, act.Message)
		}
	}
	if got := s.marks(); got != "one\nthree\n" {
		t.Errorf("exec actions ran %q, want each once", got)
	}
	if n := s.img.hitCount("slow/img.zst"); n != 1 {
		t.Errorf("the image was downloaded %d times", n)
	}
	disk, _ := os.ReadFile(s.disk)
	if !bytes.Equal(disk[:len(s.image)], s.image) {
		t.Error("the disk does not hold the image")
	}
	if p := k.action(name, "image"); p.Progress == nil || p.Progress.Percent != 100 || !strings.Contains(p.Message, "sha256 verified") {
		t.Errorf("image progress %+v, message %q", p.Progress, p.Message)
	}
	if s.power.reboots != 1 {
		t.Errorf("%d reboots", s.power.reboots)
	}
	// A later run finds nothing to do.
	found, err := newTestAgent(t, k, s.power).RunWorkflow(context.Background())
	if found || err != nil {
		t.Errorf("after the workflow: found %v, err %v", found, err)
	}
}

func TestAgentResumesWithoutRedoing(t *testing.T) {
	s := newScenario(t)
	k := s.k
	name := k.startWorkflow("install")
	// A previous agent fetched the workflow, finished "one" and was in the middle of
	// "image" when it died.
	if _, err := k.eng.Fetch(context.Background(), "web-1"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ action, state string }{{"one", "running"}, {"one", "succeeded"}, {"image", "running"}} {
		if _, err := k.eng.Apply(context.Background(), "web-1", name, r.action, workflow.Report{State: r.state, Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := newTestAgent(t, k, s.power).Run(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	st := k.status(name)
	if st.State != workflow.Succeeded {
		t.Fatalf("workflow %s: %s", st.State, st.Message)
	}
	if got := s.marks(); got != "three\n" {
		t.Errorf("exec actions ran %q; the finished one must not run again", got)
	}
	if a := k.action(name, "image"); a.Attempts != 2 {
		t.Errorf("image: %d attempts; the interrupted one counts", a.Attempts)
	}
}

func TestAgentRetriesReportAttempts(t *testing.T) {
	s := newScenario(t)
	name := s.k.startWorkflow("retry")
	if err := newTestAgent(t, s.k, s.power).Run(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	a := s.k.action(name, "flaky")
	if a.State != workflow.Succeeded || a.Attempts != 2 {
		t.Fatalf("flaky: %s after %d attempts: %s", a.State, a.Attempts, a.Message)
	}
	log := strings.Join(a.Log, "\n")
	if !strings.Contains(log, "attempt 1 failed: /bin/sh: exit status 1; last output: try 1") || !strings.Contains(log, "try 2") {
		t.Errorf("log:\n%s", log)
	}
	var attempts []string
	s.k.mu.Lock()
	for _, r := range s.k.reports {
		attempts = append(attempts, r.state)
	}
	s.k.mu.Unlock()
	if attempts[0] != "running" || attempts[len(attempts)-1] != "succeeded" {
		t.Errorf("reports %v", attempts)
	}
}

func TestAgentFailures(t *testing.T) {
	cases := []struct {
		template, action, want string
		attempts               int
		wiped                  bool
	}{
		{"slow-exec", "sleep", "timed out after 1s", 1, false},
		{"image-404", "image", "attempt 2 of 2: GET " /* URL */, 2, false},
		{"image-truncated", "image", "truncated", 1, true},
		{"image-mismatch", "image", "sha256 mismatch", 1, true},
	}
	for _, c := range cases {
		t.Run(c.template, func(t *testing.T) {
			s := newScenario(t)
			name := s.k.startWorkflow(c.template)
			start := time.Now()
			if err := newTestAgent(t, s.k, s.power).Run(context.Background(), true); err != nil {
				t.Fatal(err)
			}
			if time.Since(start) > 15*time.Second {
				t.Errorf("took %s", time.Since(start))
			}
			st := s.k.status(name)
			a := s.k.action(name, c.action)
			if st.State != workflow.Failed || a.State != workflow.Failed || a.Attempts != c.attempts || !strings.Contains(a.Message, c.want) {
				t.Fatalf("workflow %s, action %s after %d attempts: %q (want %q)", st.State, a.State, a.Attempts, a.Message, c.want)
			}
			if c.template == "image-404" && !strings.Contains(a.Message, "404 Not Found") {
				t.Errorf("message %q", a.Message)
			}
			disk, _ := os.ReadFile(s.disk)
			if c.wiped && !bytes.Equal(disk[:1<<20], make([]byte, 1<<20)) {
				t.Error("a failed image left data at the start of the disk")
			}
			if !c.wiped && c.action == "image" && disk[0] != 0xAA {
				t.Error("a download that never started changed the disk")
			}
		})
	}
}

func TestAgentStopsWhenKilnMovesOn(t *testing.T) {
	s := newScenario(t)
	name := s.k.startWorkflow("long")
	a := newTestAgent(t, s.k, s.power)
	type result struct {
		found bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		found, err := a.RunWorkflow(context.Background())
		done <- result{found, err}
	}()
	for s.k.action(name, "sleep").State != workflow.Running {
		time.Sleep(20 * time.Millisecond)
	}
	// An operator starts another workflow: the running one is failed (superseded),
	// and the agent's next heartbeat gets a 409.
	start := time.Now()
	next := s.k.startWorkflow("retry")
	select {
	case r := <-done:
		if !r.found || r.err != nil {
			t.Fatalf("found %v, err %v", r.found, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent kept running a superseded workflow")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("stopped after %s", time.Since(start))
	}
	if st := s.k.status(next); st.State != workflow.Pending {
		t.Errorf("the new workflow is %s", st.State)
	}
}

func TestAgentKexec(t *testing.T) {
	s := newScenario(t)
	name := s.k.startWorkflow("power")
	if err := newTestAgent(t, s.k, s.power).Run(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if st := s.k.status(name); st.State != workflow.Succeeded {
		t.Fatalf("workflow %s: %s", st.State, st.Message)
	}
	if s.power.kexecLoads != 1 || s.power.kexecs != 1 || s.power.kexecCmdline != "console=ttyS0" || s.power.kernelSize != int64(len(s.img.files["img.zst"])) {
		t.Errorf("power %+v", s.power)
	}
	// A kernel without kexec: the action fails, and says why.
	s2 := newScenario(t)
	s2.power.kexecLoadErr = fmt.Errorf("kexec_file_load: %w", errors.ErrUnsupported)
	name = s2.k.startWorkflow("power")
	if err := newTestAgent(t, s2.k, s2.power).Run(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if a := s2.k.action(name, "kexec"); a.State != workflow.Failed || !strings.Contains(a.Message, "kexec is not available") || s2.power.kexecs != 0 {
		t.Errorf("kexec unsupported: %s %q, %d kexecs", a.State, a.Message, s2.power.kexecs)
	}
}

func TestAgentHoldsResultOnDisk(t *testing.T) {
	s := newScenario(t)
	name := s.k.startWorkflow("retry")
	a := newTestAgent(t, s.k, s.power)
	// An agent that ran the action but died before Kiln had its result...
	a.savePending(name, "flaky", workflow.Report{State: workflow.Succeeded, Attempt: 1, Message: "held"})
	if _, err := s.k.eng.Fetch(context.Background(), "web-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.k.eng.Apply(context.Background(), "web-1", name, "flaky", workflow.Report{State: workflow.Running, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	// ...delivers it when it starts again, without running the action.
	if err := a.Run(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if act := s.k.action(name, "flaky"); act.State != workflow.Succeeded || act.Message != "held" {
		t.Fatalf("flaky: %s %q", act.State, act.Message)
	}
	if _, err := os.Stat(s.mark + ".count"); err == nil {
		t.Error("the action ran again")
	}
	if _, err := os.Stat(a.pendingPath()); err == nil {
		t.Error("the delivered result is still held")
	}
}
