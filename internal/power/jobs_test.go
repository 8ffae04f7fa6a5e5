package power

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// fakeFleet hands out drivers that record concurrency; used where the point is
// the Runner's scheduling, not a BMC protocol (those run against real responses
// in the other tests).
type fakeFleet struct {
	mu        sync.Mutex
	active    map[string]int
	maxPerBMC int
	total     int
	maxTotal  int
	failures  int   // the first failures operations fail with failErr
	failErr   error // default ErrUnreachable
	hold      time.Duration
	block     bool // operations wait for ctx
	closes    int
	ops       []string
}

func (f *fakeFleet) factory(ctx context.Context, machine string, b resource.BMC) (Driver, error) {
	return &fakeDriver{f: f, bmc: b.Address}, nil
}

type fakeDriver struct {
	f   *fakeFleet
	bmc string
}

func (d *fakeDriver) op(ctx context.Context, name string) error {
	f := d.f
	f.mu.Lock()
	if f.active == nil {
		f.active = map[string]int{}
	}
	f.active[d.bmc]++
	f.total++
	f.maxPerBMC = max(f.maxPerBMC, f.active[d.bmc])
	f.maxTotal = max(f.maxTotal, f.total)
	f.ops = append(f.ops, d.bmc+" "+name)
	fail := f.failures > 0
	if fail {
		f.failures--
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active[d.bmc]--
		f.total--
		f.mu.Unlock()
	}()
	if f.block {
		<-ctx.Done()
		return fmt.Errorf("%w: %w", ErrUnreachable, ctx.Err())
	}
	if err := sleepCtx(ctx, f.hold); err != nil {
		return err
	}
	if fail {
		if f.failErr != nil {
			return f.failErr
		}
		return fmt.Errorf("%w: connection refused", ErrUnreachable)
	}
	return nil
}

func (d *fakeDriver) PowerOn(ctx context.Context) error    { return d.op(ctx, "on") }
func (d *fakeDriver) PowerOff(ctx context.Context) error   { return d.op(ctx, "off") }
func (d *fakeDriver) PowerCycle(ctx context.Context) error { return d.op(ctx, "cycle") }
func (d *fakeDriver) SoftOff(ctx context.Context) error    { return d.op(ctx, "soft-off") }
func (d *fakeDriver) Status(ctx context.Context) (State, error) {
	return StateOn, d.op(ctx, "status")
}
func (d *fakeDriver) SetNextBoot(ctx context.Context, dev Device) error {
	return d.op(ctx, "boot-"+string(dev))
}
func (d *fakeDriver) Close(context.Context) error {
	d.f.mu.Lock()
	d.f.closes++
	d.f.mu.Unlock()
	return nil
}

type recorded struct{ kind, who, typ, machine, msg string }

type testRecorder struct {
	mu  sync.Mutex
	all []recorded
}

func (r *testRecorder) Event(_ context.Context, machine, typ, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, recorded{"event", "", typ, machine, msg})
}

func (r *testRecorder) Audit(_ context.Context, actor, action, machine, summary string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, recorded{"audit", actor, action, machine, summary})
}

func (r *testRecorder) types(machine string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, x := range r.all {
		if x.machine == machine {
			out = append(out, x.kind+":"+x.typ)
		}
	}
	return out
}

func (r *testRecorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("%+v", r.all)
}

func reqs(n, bmcs int, op Op) []Request {
	out := make([]Request, n)
	for i := range out {
		out[i] = Request{Target: Target{Machine: fmt.Sprintf("m%02d", i),
			BMC: resource.BMC{Driver: "redfish", Address: fmt.Sprintf("https://10.0.0.%d", i%bmcs)}}, Op: op, Actor: "tok-ops"}
	}
	return out
}

func TestRunnerSerializesPerBMC(t *testing.T) {
	f := &fakeFleet{hold: 10 * time.Millisecond}
	r := NewRunner(RunnerConfig{NewDriver: f.factory, Jobs: &MemoryJobStore{}, Parallelism: 16})
	defer r.Shutdown(context.Background())
	// Two fleet requests at once on the same two BMCs: still one request per BMC at a time.
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, j := range r.RunAll(context.Background(), reqs(8, 2, OpCycle)) {
				if j.State != JobSucceeded {
					t.Errorf("job %s: %s %s", j.Machine, j.State, j.Error)
				}
			}
		}()
	}
	wg.Wait()
	if f.maxPerBMC != 1 || f.maxTotal != 2 {
		t.Fatalf("max concurrent per BMC %d, overall %d; want 1 and 2", f.maxPerBMC, f.maxTotal)
	}
}

func TestRunnerBoundedParallelism(t *testing.T) {
	f := &fakeFleet{hold: 20 * time.Millisecond}
	r := NewRunner(RunnerConfig{NewDriver: f.factory, Jobs: &MemoryJobStore{}, Parallelism: 4})
	defer r.Shutdown(context.Background())
	jobs := r.RunAll(context.Background(), reqs(40, 40, OpStatus))
	for i, j := range jobs {
		if j.State != JobSucceeded || j.PowerState != StateOn || j.Machine != fmt.Sprintf("m%02d", i) {
			t.Fatalf("job %d: %+v", i, j)
		}
	}
	if f.maxTotal > 4 || f.maxTotal < 2 {
		t.Fatalf("max concurrent jobs %d, want between 2 and the bound 4", f.maxTotal)
	}
	if f.closes != 40 {
		t.Fatalf("drivers closed %d times, want 40", f.closes)
	}
}

func TestRunnerRetries(t *testing.T) {
	f := &fakeFleet{failures: 2}
	store, rec := &MemoryJobStore{}, &testRecorder{}
	r := NewRunner(RunnerConfig{NewDriver: f.factory, Jobs: store, Recorder: rec, Attempts: 3, Backoff: time.Millisecond})
	j, err := r.Run(context.Background(), reqs(1, 1, OpOn)[0])
	if err != nil {
		t.Fatal(err)
	}
	if j.State != JobSucceeded || j.Attempts != 3 || j.Error != "" || j.StartedAt.IsZero() || j.FinishedAt.IsZero() {
		t.Fatalf("job: %+v", j)
	}
	want := []string{"audit:power-on", "event:" + EventPowerRequested, "event:" + EventPowerRetry, "event:" + EventPowerRetry, "event:" + EventPowerSucceeded}
	if got := rec.types("m00"); !slices.Equal(got, want) {
		t.Fatalf("recorded %v, want %v", got, want)
	}
	var states []JobState
	for _, h := range store.History() {
		states = append(states, h.State)
	}
	if !slices.Equal(states, []JobState{JobPending, JobRunning, JobRunning, JobRunning, JobSucceeded}) {
		t.Fatalf("saved states %v", states)
	}
	if saved, ok := store.Job(j.ID); !ok || saved.State != JobSucceeded {
		t.Fatalf("stored job: %+v", saved)
	}
}

func TestRunnerGivesUp(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		attempts int
	}{
		{"retryable, budget spent", fmt.Errorf("%w: no route to host", ErrUnreachable), 3},
		{"not retryable", fmt.Errorf("%w: Pxe is not offered", ErrUnsupported), 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeFleet{failures: 100, failErr: c.err}
			rec := &testRecorder{}
			r := NewRunner(RunnerConfig{NewDriver: f.factory, Jobs: &MemoryJobStore{}, Recorder: rec, Attempts: 3, Backoff: time.Millisecond})
			j, _ := r.Run(context.Background(), reqs(1, 1, OpReprovision)[0])
			if j.State != JobFailed || j.Attempts != c.attempts || !strings.Contains(j.Error, c.err.Error()) {
				t.Fatalf("job: %+v", j)
			}
			if got := rec.types("m00"); got[len(got)-2] != "event:"+EventPowerFailed || got[len(got)-1] != "audit:power-reprovision-failed" {
				t.Fatalf("recorded %v", got)
			}
		})
	}
}

func TestRunnerTimeout(t *testing.T) {
	f := &fakeFleet{block: true}
	r := NewRunner(RunnerConfig{NewDriver: f.factory, Jobs: &MemoryJobStore{}, Timeout: 100 * time.Millisecond, Backoff: time.Millisecond})
	start := time.Now()
	j, _ := r.Run(context.Background(), reqs(1, 1, OpOff)[0])
	if j.State != JobFailed || !strings.Contains(j.Error, "deadline exceeded") {
		t.Fatalf("job: %+v", j)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("a job with a 100ms timeout took %s", time.Since(start))
	}
}

func TestRunnerSubmitAndShutdown(t *testing.T) {
	f := &fakeFleet{block: true}
	store := &MemoryJobStore{}
	r := NewRunner(RunnerConfig{NewDriver: f.factory, Jobs: store})
	j, err := r.Submit(context.Background(), reqs(1, 1, OpCycle)[0])
	if err != nil || j.State != JobPending || j.ID == "" {
		t.Fatalf("Submit: %+v, %v", j, err)
	}
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	saved, _ := store.Job(j.ID)
	if saved.State != JobFailed || !strings.Contains(saved.Error, "canceled") {
		t.Fatalf("after Shutdown the job is %+v", saved)
	}
	if _, err := r.Submit(context.Background(), reqs(1, 1, OpCycle)[0]); err == nil {
		t.Fatal("Submit after Shutdown succeeded")
	}
}

func TestRunnerRejects(t *testing.T) {
	f := &fakeFleet{}
	r := NewRunner(RunnerConfig{NewDriver: f.factory, Jobs: &MemoryJobStore{}})
	bad := []Request{
		{Target: Target{Machine: "m1"}, Op: "explode"},
		{Target: Target{Machine: "m1"}, Op: OpSetBoot, Device: "floppy"},
		{Op: OpOn},
	}
	for _, req := range bad {
		if _, err := r.Run(context.Background(), req); err == nil {
			t.Errorf("%+v accepted", req)
		}
	}
	jobs := r.RunAll(context.Background(), append(bad, reqs(1, 1, OpOn)...))
	for i, j := range jobs[:3] {
		if j.State != JobFailed || j.Error == "" {
			t.Errorf("bad request %d: %+v", i, j)
		}
	}
	if jobs[3].State != JobSucceeded {
		t.Errorf("good request next to bad ones: %+v", jobs[3])
	}
}

// TestRunnerRedfish runs jobs against the BMC simulator: a reprovision, a status,
// and a BMC that never reaches the state (a failed job after its retries, bounded
// in time, with the reason and without the password anywhere).
func TestRunnerRedfish(t *testing.T) {
	log := &logBuffer{}
	opts := fastOptions(log)
	opts.StateTimeout = 200 * time.Millisecond
	factory := func(ctx context.Context, machine string, b resource.BMC) (Driver, error) {
		return New(ctx, b, staticCreds{testUser, testPassword}, opts)
	}
	good := newBMCSim(t, simConfig{fixture: "hpe-ilo5-dl325-gen10plus", requireIfMatch: true, transition: 20 * time.Millisecond})
	stuck := newBMCSim(t, simConfig{fixture: "gigabyte-ami-h262-z63", stuck: true})
	wrong := newBMCSim(t, simConfig{fixture: "openbmc-stock", password: "not-" + testPassword, user: testUser})
	store, rec := &MemoryJobStore{}, &testRecorder{}
	r := NewRunner(RunnerConfig{NewDriver: factory, Jobs: store, Recorder: rec, Attempts: 2, Backoff: 10 * time.Millisecond,
		Logger: log.logger()})

	start := time.Now()
	jobs := r.RunAll(context.Background(), []Request{
		{Target: Target{"web-1", redfishBMC(good)}, Op: OpReprovision, Actor: "tok-alice"},
		{Target: Target{"web-2", redfishBMC(stuck)}, Op: OpOff, Actor: "tok-alice"},
		{Target: Target{"web-3", redfishBMC(wrong)}, Op: OpStatus, Actor: "tok-alice"},
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %s", took)
	}
	if j := jobs[0]; j.State != JobSucceeded {
		t.Fatalf("reprovision: %+v", j)
	}
	if tg, en := good.Boot(); tg != "Pxe" || en != "Once" {
		t.Fatalf("reprovision left the boot override at %s/%s", tg, en)
	}
	if got := good.Resets(); !slices.Equal(got, []string{"ForceOff", "On"}) {
		t.Fatalf("reprovision resets %v (iLO lists no PowerCycle)", got)
	}
	if _, open, _ := good.Sessions(); open != 0 {
		t.Fatalf("%d sessions left open", open)
	}
	j := jobs[1]
	if j.State != JobFailed || j.Attempts != 2 || !strings.Contains(j.Error, "did not reach the requested power state") {
		t.Fatalf("stuck BMC: %+v", j)
	}
	if _, open, _ := stuck.Sessions(); open != 0 {
		t.Fatalf("%d sessions left open after failed attempts", open)
	}
	j = jobs[2]
	if j.State != JobFailed || !strings.Contains(j.Error, "refused the credentials") || j.PowerState != "" {
		t.Fatalf("wrong credentials: %+v", j)
	}
	all, _ := json.Marshal(store.History())
	assertNoSecret(t, "jobs", string(all))
	assertNoSecret(t, "events and audit", rec.text())
	assertNoSecret(t, "log", log.String())
	if !strings.Contains(rec.text(), "who:tok-alice typ:power-reprovision machine:web-1") ||
		!strings.Contains(rec.text(), "did not reach the requested power state") {
		t.Fatalf("the audit record lacks the actor or the events the failure: %s", rec.text())
	}
}

// countingCredentials counts reads of a credentials secret (each an audited release).
type countingCredentials struct {
	mu    sync.Mutex
	reads int
}

func (c *countingCredentials) BMCCredentials(ctx context.Context, name string) (string, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return "admin", "s3cret", nil
}

// Issue 19 item 6: one job's retries are one use of the BMC credential (one audited
// read of its secret); a second job reads it again.
func TestRunnerRetriesReadCredentialsOnce(t *testing.T) {
	f := &fakeFleet{failures: 2}
	creds := &countingCredentials{}
	factory := func(ctx context.Context, machine string, b resource.BMC) (Driver, error) {
		if _, _, err := resolveCredentials(ctx, b, creds); err != nil {
			return nil, err
		}
		return f.factory(ctx, machine, b)
	}
	r := NewRunner(RunnerConfig{NewDriver: factory, Jobs: &MemoryJobStore{}, Attempts: 3, Backoff: time.Millisecond})
	defer r.Shutdown(context.Background())
	req := reqs(1, 1, OpOn)[0]
	req.BMC.Driver, req.BMC.CredentialsSecret = "redfish", "bmc-creds"
	j, err := r.Run(context.Background(), req)
	if err != nil || j.State != JobSucceeded || j.Attempts != 3 {
		t.Fatalf("job: %+v %v", j, err)
	}
	if creds.reads != 1 {
		t.Fatalf("a job of 3 attempts read the credentials %d times, want 1", creds.reads)
	}
	if j, err := r.Run(context.Background(), req); err != nil || j.State != JobSucceeded {
		t.Fatalf("second job: %+v %v", j, err)
	}
	if creds.reads != 2 {
		t.Fatalf("two jobs read the credentials %d times, want 2", creds.reads)
	}
}
