package workflow_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/workflow"
)

const manifests = `
kind: Artifact
metadata: {name: disk-image}
spec: {source: images/disk.raw, sha256: "0000000000000000000000000000000000000000000000000000000000000abc"}
---
kind: Template
metadata: {name: install}
spec:
  timeout: 1h
  actions:
    - name: stream
      type: image2disk
      timeout: 10m
      retries: 1
      args: {image: disk-image, disk: /dev/vda}
    - name: hostname
      type: write-file
      args: {path: /etc/hostname, content: "{{ .Machine.Name }} {{ index .Machine.Labels \"rack\" }}", partitionLabel: root}
    - name: reboot
      type: reboot
---
kind: Template
metadata: {name: bad-render}
spec:
  actions:
    - name: x
      type: exec
      args: {command: "{{ .Machine.Nope }}"}
---
kind: Profile
metadata: {name: p}
spec: {boot: {agent: true}, workflow: install}
---
kind: Machine
metadata: {name: web-1, labels: {rack: r1}}
spec: {profile: p, interfaces: [{mac: "52:54:00:00:00:01"}]}
---
kind: Machine
metadata: {name: web-2}
spec: {profile: p, interfaces: [{mac: "52:54:00:00:00:02"}]}
`

type env struct {
	t   *testing.T
	eng *workflow.Engine
	inv *inventory.Service
	now time.Time
}

func newEnv(t *testing.T) *env {
	ts := testkit.NewStore(t, manifests)
	e := &env{t: t, inv: ts.Inv, now: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
	e.eng = &workflow.Engine{Store: ts.Store, Now: func() time.Time { return e.now }, ArtifactURL: func(n string) string { return "http://kiln/artifacts/" + n }}
	return e
}

func (e *env) state(machine string) string {
	m, err := e.inv.Get(context.Background(), "Machine", machine)
	if err != nil {
		e.t.Fatal(err)
	}
	var st resource.MachineStatus
	json.Unmarshal(m.Status, &st)
	return st.State
}

// TestSignedRemoteImageThroughKiln: the agent gets Kiln's URL for a remote image
// that carries a signature (Kiln checks it before serving), the source's URL for an
// unsigned remote one.
func TestSignedRemoteImageThroughKiln(t *testing.T) {
	const sig = "untrusted comment: signature from minisign secret key\n" +
		"RUQ+iybNMoh7Wy9s6Jy9Qhxlv1AwxXDua3rXkVcx6nms0zfZ+sXUceGMu/3sUPp8uKJx+OxEb5pxCrw2Rbc/16o1KAs/jITcbgw=\n" +
		"trusted comment: kiln test\n" +
		"0q+cNrDykp+DYMGmQfPdDQ66bO/mDByKW3oT0Uy3e+D+dEv1CBPlLA9YEWtV9gw+QOwITNvtd2m/dVC3lL2yDQ==\n"
	sigJSON, _ := json.Marshal(sig)
	ts := testkit.NewStore(t, `kind: Artifact
metadata: {name: signed-remote}
spec: {source: "https://images.example.com/disk.raw", signature: `+string(sigJSON)+`}
---
kind: Artifact
metadata: {name: plain-remote}
spec: {source: "https://images.example.com/plain.raw"}
---
kind: Template
metadata: {name: two}
spec:
  actions:
    - {name: a, type: image2disk, args: {image: signed-remote, disk: /dev/vda}}
    - {name: b, type: image2disk, args: {image: plain-remote, disk: /dev/vdb}}
---
kind: Profile
metadata: {name: p}
spec: {boot: {agent: true}, workflow: two}
---
kind: Machine
metadata: {name: m-1}
spec: {profile: p, interfaces: [{mac: "52:54:00:00:00:07"}]}
`)
	eng := &workflow.Engine{Store: ts.Store, ArtifactURL: func(n string) string { return "http://kiln/artifacts/" + n }}
	wf, err := eng.Start(context.Background(), "token:x", "m-1", "")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := workflow.StatusOf(wf)
	if u := st.Actions[0].Args["imageURL"]; u != "http://kiln/artifacts/signed-remote" {
		t.Errorf("signed remote image: agent URL %v, want Kiln's", u)
	}
	if u := st.Actions[1].Args["imageURL"]; u != "https://images.example.com/plain.raw" {
		t.Errorf("unsigned remote image: agent URL %v, want the source", u)
	}
}

func TestWorkflowSucceeds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	wf, err := e.eng.Start(ctx, "token:x", "web-1", "")
	if err != nil {
		t.Fatal(err)
	}
	if e.state("web-1") != resource.StateProvisioning {
		t.Fatalf("machine state %q after start", e.state("web-1"))
	}
	st, _ := workflow.StatusOf(wf)
	args := st.Actions[0].Args
	if args["imageURL"] != "http://kiln/artifacts/disk-image" || args["sha256"] != "0000000000000000000000000000000000000000000000000000000000000abc" {
		t.Fatalf("image args not resolved: %v", args)
	}
	if st.Actions[1].Args["content"] != "web-1 r1" {
		t.Fatalf("template not rendered: %v", st.Actions[1].Args)
	}
	name := wf.Metadata.Name
	// Out of order is refused.
	if _, err := e.eng.Apply(ctx, "web-1", name, "hostname", workflow.Report{State: workflow.Running}); !errors.Is(err, workflow.ErrBadReport) {
		t.Fatalf("out-of-order report: %v", err)
	}
	if _, err := e.eng.Fetch(ctx, "web-1"); err != nil { // what the agent does first
		t.Fatal(err)
	}
	// Another machine cannot report on it.
	if _, err := e.eng.Apply(ctx, "web-2", name, "stream", workflow.Report{State: workflow.Running}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("foreign report: %v", err)
	}
	steps := []struct{ action, state string }{
		{"stream", workflow.Running}, {"stream", workflow.Running}, {"stream", workflow.Succeeded},
		{"hostname", workflow.Succeeded}, {"reboot", workflow.Running}, {"reboot", workflow.Succeeded},
	}
	for i, s := range steps {
		e.now = e.now.Add(time.Second)
		rep := workflow.Report{State: s.state, Progress: &workflow.Progress{Bytes: int64(i * 100), Total: 1000}, Log: []string{"line " + s.action}}
		if _, err := e.eng.Apply(ctx, "web-1", name, s.action, rep); err != nil {
			t.Fatalf("step %d %v: %v", i, s, err)
		}
	}
	if e.state("web-1") != resource.StateProvisioned {
		t.Fatalf("machine state %q after success", e.state("web-1"))
	}
	if _, err := e.eng.Apply(ctx, "web-1", name, "reboot", workflow.Report{State: workflow.Running}); !errors.Is(err, workflow.ErrBadReport) {
		t.Fatalf("report after the end: %v", err)
	}
	evs, _ := e.inv.Events(ctx, "web-1", 100)
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	joined := strings.Join(types, ",")
	for _, want := range []string{"WorkflowCreated", "ActionStarted", "AgentLog", "ActionSucceeded", "WorkflowSucceeded"} {
		if !strings.Contains(joined, want) {
			t.Errorf("events lack %s: %v", want, types)
		}
	}
}

func TestWorkflowFailsAndTimesOut(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	wf, _ := e.eng.Start(ctx, "t", "web-1", "install")
	if _, err := e.eng.Fetch(ctx, "web-1"); err != nil { // what the agent does first
		t.Fatal(err)
	}
	e.eng.Apply(ctx, "web-1", wf.Metadata.Name, "stream", workflow.Report{State: workflow.Running})
	st, err := e.eng.Apply(ctx, "web-1", wf.Metadata.Name, "stream", workflow.Report{State: workflow.Failed, Message: "sha256 mismatch: got 1234, want abc"})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != workflow.Failed || !strings.Contains(st.Message, "sha256 mismatch") || e.state("web-1") != resource.StateFailed {
		t.Fatalf("after failure: %s %q machine %s", st.State, st.Message, e.state("web-1"))
	}

	// A new workflow supersedes; an action that never reports back times out.
	wf2, _ := e.eng.Start(ctx, "t", "web-2", "install")
	if _, err := e.eng.Fetch(ctx, "web-2"); err != nil {
		t.Fatal(err)
	}
	e.eng.Apply(ctx, "web-2", wf2.Metadata.Name, "stream", workflow.Report{State: workflow.Running})
	e.now = e.now.Add(19 * time.Minute) // within 10m x (1 retry + 1)
	if n, _ := e.eng.Sweep(ctx); n != 0 {
		t.Fatalf("swept too early")
	}
	e.now = e.now.Add(2 * time.Minute)
	if n, err := e.eng.Sweep(ctx); n != 1 || err != nil {
		t.Fatalf("sweep: %d %v", n, err)
	}
	got, _ := e.inv.Get(ctx, "Workflow", wf2.Metadata.Name)
	st2, _ := workflow.StatusOf(got)
	if st2.State != workflow.TimedOut || st2.Actions[0].State != workflow.TimedOut || e.state("web-2") != resource.StateFailed {
		t.Fatalf("timeout: %s %s machine %s", st2.State, st2.Actions[0].State, e.state("web-2"))
	}
}

func TestStartErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.eng.Start(ctx, "t", "web-1", "bad-render"); err == nil || !strings.Contains(err.Error(), `template "bad-render": spec.actions[0] (x).args.command`) {
		t.Fatalf("render error: %v", err)
	}
	if _, err := e.eng.Start(ctx, "t", "nope", ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing machine: %v", err)
	}
	if e.state("web-1") != resource.StateNew {
		t.Fatalf("a failed start changed the machine: %s", e.state("web-1"))
	}
	// Starting twice supersedes the first.
	a, _ := e.eng.Start(ctx, "t", "web-1", "")
	e.now = e.now.Add(time.Second)
	if _, err := e.eng.Start(ctx, "t", "web-1", ""); err != nil {
		t.Fatal(err)
	}
	old, _ := e.inv.Get(ctx, "Workflow", a.Metadata.Name)
	if st, _ := workflow.StatusOf(old); st.State != workflow.Failed || st.Message != "superseded by a new workflow" {
		t.Fatalf("first workflow: %+v", st)
	}
}

func TestAgentAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	wf, _ := e.eng.Start(ctx, "t", "web-1", "")
	api := &workflow.AgentAPI{Engine: e.eng, Identity: func(r *http.Request) (string, bool) {
		m := r.Header.Get("X-Test-Machine")
		return m, m != ""
	}}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	do := func(machine, method, path, body string) int {
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewBufferString(body))
		if machine != "" {
			req.Header.Set("X-Test-Machine", machine)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		machine, method, path, body string
		want                        int
	}{
		{"", "GET", "/agent/v1/workflow", "", 401},
		{"web-1", "GET", "/agent/v1/workflow", "", 200},
		{"web-2", "GET", "/agent/v1/workflow", "", 204},
		{"web-2", "POST", "/agent/v1/workflows/" + wf.Metadata.Name + "/actions/stream", `{"state":"running"}`, 404},
		{"web-1", "POST", "/agent/v1/workflows/" + wf.Metadata.Name + "/actions/stream", `{"state":"running","bogus":1}`, 400},
		{"web-1", "POST", "/agent/v1/workflows/" + wf.Metadata.Name + "/actions/stream", `{"state":"running"}`, 200},
		{"web-1", "POST", "/agent/v1/workflows/" + wf.Metadata.Name + "/actions/reboot", `{"state":"running"}`, 409},
		{"web-1", "POST", "/agent/v1/facts", `{"cpus":2,"memory_mb":2048,"disks":[{"name":"vda"}]}`, 204},
		{"web-1", "POST", "/agent/v1/facts", `[1,2]`, 400},
	}
	for _, c := range cases {
		if got := do(c.machine, c.method, c.path, c.body); got != c.want {
			t.Errorf("%s %s as %q: %d, want %d", c.method, c.path, c.machine, got, c.want)
		}
	}
	m, _ := e.inv.Get(ctx, "Machine", "web-1")
	if !strings.Contains(string(m.Status), `"memory_mb":2048`) {
		t.Fatalf("facts not recorded: %s", m.Status)
	}
}
