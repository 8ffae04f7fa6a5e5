package power

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// Op is what a power job does.
type Op string

// Power operations.
const (
	OpOn      Op = "on"
	OpOff     Op = "off"
	OpCycle   Op = "cycle"
	OpSoftOff Op = "soft-off"
	OpStatus  Op = "status"
	// OpSetBoot sets the next boot device (Request.Device) once.
	OpSetBoot Op = "set-boot"
	// OpReprovision sets the next boot to PXE once and power-cycles: the boot
	// path takes the machine from there (start its workflow first).
	OpReprovision Op = "reprovision"
)

// ParseOp checks an operation name.
func ParseOp(s string) (Op, error) {
	switch o := Op(s); o {
	case OpOn, OpOff, OpCycle, OpSoftOff, OpStatus, OpSetBoot, OpReprovision:
		return o, nil
	case "soft", "softoff":
		return OpSoftOff, nil
	}
	return "", fmt.Errorf("power operation %q: not one of on, off, cycle, soft-off, status, set-boot, reprovision", s)
}

// JobState is where a job is in its life.
type JobState string

// Job states.
const (
	JobPending   JobState = "pending"
	JobRunning   JobState = "running"
	JobSucceeded JobState = "succeeded"
	JobFailed    JobState = "failed"
)

// Job is one power request, as persisted. Error never holds a credential.
type Job struct {
	ID         string   `json:"id"`
	Machine    string   `json:"machine"`
	Op         Op       `json:"op"`
	Device     Device   `json:"device,omitempty"`
	Actor      string   `json:"actor,omitempty"`
	BMCDriver  string   `json:"bmcDriver"`
	BMCAddress string   `json:"bmcAddress"`
	State      JobState `json:"state"`
	// Owner is the runner (server) that accepted the job.
	Owner       string `json:"owner,omitempty"`
	Attempts    int    `json:"attempts"`
	MaxAttempts int    `json:"maxAttempts"`
	// PowerState is what the BMC reported, for status jobs.
	PowerState State     `json:"powerState,omitempty"`
	Error      string    `json:"error,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Done reports whether the job has finished.
func (j *Job) Done() bool { return j.State == JobSucceeded || j.State == JobFailed }

// Target is a machine and its BMC.
type Target struct {
	Machine string
	BMC     resource.BMC
}

// Request asks for one operation on one machine.
type Request struct {
	Target
	Op     Op
	Device Device // for OpSetBoot
	Actor  string // who asked (an API token id, "system"), for the audit entry
}

// JobStore persists jobs; SaveJob is called at every state change with the whole
// job. The Runner does not keep finished jobs; look them up in the store.
type JobStore interface {
	SaveJob(ctx context.Context, j *Job) error
}

// Recorder writes machine events and audit entries. Failures to record are the
// Recorder's to log; they do not fail the job.
type Recorder interface {
	Event(ctx context.Context, machine, typ, msg string)
	Audit(ctx context.Context, actor, action, machine, summary string)
}

// DriverFactory makes the driver for machine's BMC; typically
//
//	func(ctx context.Context, machine string, b resource.BMC) (power.Driver, error) { return power.New(ctx, b, creds, opts) }
//
// It gets the machine so that credentials are resolved for that machine (a Secret's
// release rules say which machines' BMCs may use it).
type DriverFactory func(ctx context.Context, machine string, bmc resource.BMC) (Driver, error)

// Event types the Runner records.
const (
	EventPowerRequested = "PowerRequested"
	EventPowerRetry     = "PowerRetry"
	EventPowerSucceeded = "PowerSucceeded"
	EventPowerFailed    = "PowerFailed"
)

// RunnerConfig configures a Runner. NewDriver and Jobs are required.
type RunnerConfig struct {
	NewDriver DriverFactory
	Jobs      JobStore
	Recorder  Recorder // nil: record nothing
	// Parallelism bounds the jobs running at once across all BMCs. Default 16.
	Parallelism int
	// Attempts is how many times a job is tried. Default 3.
	Attempts int
	// Timeout bounds a whole job, retries and waits included. Default 10m.
	Timeout time.Duration
	// Backoff is the pause before the second attempt; it doubles for each
	// further attempt, up to MaxBackoff. Defaults 5s and 1m.
	Backoff    time.Duration
	MaxBackoff time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
	// Owner names this runner in the jobs it accepts (Job.Owner), so that a
	// restarted server can tell the jobs it left unfinished from another
	// replica's.
	Owner string
}

// Timeout returns how long a job may run, retries included.
func (r *Runner) Timeout() time.Duration { return r.cfg.Timeout }

// Runner runs power jobs: requests to one BMC are serialized, at most Parallelism
// jobs run at once, and each job is retried with backoff inside its timeout.
type Runner struct {
	cfg RunnerConfig
	sem chan struct{}

	mu     sync.Mutex
	locks  map[string]*bmcLock
	closed bool

	bg     context.Context // background jobs (Submit) run under it
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type bmcLock struct {
	ch   chan struct{} // holds one token while the BMC is in use
	refs int
}

// NewRunner returns a Runner; call Shutdown to stop background jobs. It panics
// without NewDriver or Jobs, a wiring mistake.
func NewRunner(cfg RunnerConfig) *Runner {
	if cfg.NewDriver == nil || cfg.Jobs == nil {
		panic("power.NewRunner: RunnerConfig.NewDriver and RunnerConfig.Jobs are required")
	}
	if cfg.Parallelism <= 0 {
		cfg.Parallelism = 16
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 3
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 5 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	bg, cancel := context.WithCancel(context.Background())
	return &Runner{cfg: cfg, sem: make(chan struct{}, cfg.Parallelism), locks: map[string]*bmcLock{}, bg: bg, cancel: cancel}
}

// Run runs one request to completion and returns the finished job. The error is
// only about accepting the request (a bad request, the store refusing the job);
// how the job went is in the job.
func (r *Runner) Run(ctx context.Context, req Request) (*Job, error) {
	j, err := r.accept(ctx, req)
	if err != nil {
		return nil, err
	}
	r.execute(ctx, j, req)
	return j.copy(), nil
}

// RunAll runs many requests with bounded parallelism and returns the finished jobs
// in the order of reqs. A request that cannot be accepted gets a failed job.
func (r *Runner) RunAll(ctx context.Context, reqs []Request) []*Job {
	jobs := make([]*Job, len(reqs))
	for i, req := range reqs {
		j, err := r.accept(ctx, req)
		if err != nil {
			j = r.rejected(req, err)
		}
		jobs[i] = j
	}
	r.runMany(ctx, jobs, reqs)
	out := make([]*Job, len(jobs))
	for i, j := range jobs {
		out[i] = j.copy()
	}
	return out
}

// Submit accepts a request, persists it as a pending job and runs it in the
// background. The returned job is a snapshot; follow it in the JobStore.
func (r *Runner) Submit(ctx context.Context, req Request) (*Job, error) {
	jobs, err := r.SubmitAll(ctx, []Request{req})
	if err != nil {
		return nil, err
	}
	if jobs[0].State == JobFailed {
		return nil, errors.New(jobs[0].Error)
	}
	return jobs[0], nil
}

// SubmitAll is Submit for a fleet: every request becomes a pending job (or a
// failed one, when it cannot be accepted) before SubmitAll returns, and the jobs
// run in the background with bounded parallelism.
func (r *Runner) SubmitAll(ctx context.Context, reqs []Request) ([]*Job, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("power runner is shut down")
	}
	r.wg.Add(1)
	r.mu.Unlock()
	jobs := make([]*Job, len(reqs))
	snap := make([]*Job, len(reqs))
	for i, req := range reqs {
		j, err := r.accept(ctx, req)
		if err != nil {
			j = r.rejected(req, err)
		}
		jobs[i], snap[i] = j, j.copy()
	}
	go func() {
		defer r.wg.Done()
		r.runMany(r.bg, jobs, reqs)
	}()
	return snap, nil
}

// Shutdown cancels background jobs and waits for them (or ctx) to end. Cancelled
// jobs are saved as failed.
func (r *Runner) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Runner) runMany(ctx context.Context, jobs []*Job, reqs []Request) {
	// One worker takes all of one BMC's jobs, in request order, so that a BMC
	// with many machines (a blade chassis) does not tie up several workers
	// waiting for its lock.
	groups := map[string][]int{}
	var keys []string
	for i, j := range jobs {
		if j.Done() {
			continue
		}
		k := bmcKey(reqs[i].BMC)
		if groups[k] == nil {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], i)
	}
	work := make(chan []int)
	var wg sync.WaitGroup
	for w := 0; w < min(r.cfg.Parallelism, len(keys)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := range work {
				for _, i := range g {
					r.execute(ctx, jobs[i], reqs[i])
				}
			}
		}()
	}
	for _, k := range keys {
		work <- groups[k]
	}
	close(work)
	wg.Wait()
}

func newJobID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "pj-" + hex.EncodeToString(b[:])
}

func (r *Runner) accept(ctx context.Context, req Request) (*Job, error) {
	if _, err := ParseOp(string(req.Op)); err != nil {
		return nil, err
	}
	if req.Machine == "" {
		return nil, errors.New("power request: no machine")
	}
	if req.Op == OpSetBoot {
		if _, err := ParseDevice(string(req.Device)); err != nil {
			return nil, fmt.Errorf("power request for machine %q: %w", req.Machine, err)
		}
	}
	j := &Job{
		ID: newJobID(), Machine: req.Machine, Op: req.Op, Device: req.Device, Actor: req.Actor,
		BMCDriver: req.BMC.Driver, BMCAddress: req.BMC.Address,
		State: JobPending, MaxAttempts: r.cfg.Attempts, CreatedAt: r.cfg.Now().UTC(), Owner: r.cfg.Owner,
	}
	if err := r.cfg.Jobs.SaveJob(ctx, j.copy()); err != nil {
		return nil, fmt.Errorf("save power job for machine %q: %w", req.Machine, err)
	}
	if req.Op != OpStatus {
		// Who asked is audited when the request is accepted, so that it is on
		// record even if the server stops before the job ends.
		r.audit(ctx, req.Actor, "power-"+string(req.Op), req.Machine, describe(j)+" requested")
		r.event(ctx, req.Machine, EventPowerRequested, describe(j)+" requested by "+actorName(req.Actor))
	}
	return j, nil
}

// rejected is the failed job for a request that could not be accepted.
func (r *Runner) rejected(req Request, err error) *Job {
	now := r.cfg.Now().UTC()
	return &Job{Machine: req.Machine, Op: req.Op, Device: req.Device, Actor: req.Actor, BMCDriver: req.BMC.Driver,
		BMCAddress: req.BMC.Address, State: JobFailed, Error: err.Error(), CreatedAt: now, FinishedAt: now}
}

func describe(j *Job) string {
	s := "power " + string(j.Op)
	if j.Op == OpSetBoot {
		s = "set next boot " + string(j.Device)
	}
	return s + " (job " + j.ID + ")"
}

func actorName(a string) string {
	if a == "" {
		return "system"
	}
	return a
}

func (r *Runner) event(ctx context.Context, machine, typ, msg string) {
	if r.cfg.Recorder != nil {
		r.cfg.Recorder.Event(context.WithoutCancel(ctx), machine, typ, msg)
	}
}

func (r *Runner) audit(ctx context.Context, actor, action, machine, summary string) {
	if r.cfg.Recorder != nil {
		r.cfg.Recorder.Audit(context.WithoutCancel(ctx), actorName(actor), action, machine, summary)
	}
}

func (r *Runner) save(ctx context.Context, j *Job) {
	// Saving must outlive a cancelled job context, or a cancelled job would stay
	// "running" in the store forever.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.cfg.Jobs.SaveJob(sctx, j.copy()); err != nil {
		r.cfg.Logger.Error("save power job", "job", j.ID, "machine", j.Machine, "err", err)
	}
}

func (j *Job) copy() *Job {
	c := *j
	return &c
}

// bmcKey identifies a BMC for serialization: several machines may share one
// (blade chassis), and one BMC should see one request at a time.
func bmcKey(b resource.BMC) string {
	return b.Driver + "|" + strings.ToLower(strings.TrimSuffix(strings.TrimSpace(b.Address), "/"))
}

// lockBMC waits for exclusive use of a BMC, or for ctx.
func (r *Runner) lockBMC(ctx context.Context, key string) (func(), error) {
	r.mu.Lock()
	l := r.locks[key]
	if l == nil {
		l = &bmcLock{ch: make(chan struct{}, 1)}
		r.locks[key] = l
	}
	l.refs++
	r.mu.Unlock()
	release := func() {
		r.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(r.locks, key)
		}
		r.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

func (r *Runner) execute(ctx context.Context, j *Job, req Request) {
	ctx, cancel := context.WithTimeout(withJobCredentials(ctx), r.cfg.Timeout)
	defer cancel()
	log := r.cfg.Logger.With("machine", j.Machine, "job", j.ID, "op", string(j.Op))

	err := func() error {
		unlock, err := r.lockBMC(ctx, bmcKey(req.BMC))
		if err != nil {
			return fmt.Errorf("waiting for the BMC: %w", err)
		}
		defer unlock()
		select {
		case r.sem <- struct{}{}:
			defer func() { <-r.sem }()
		case <-ctx.Done():
			return fmt.Errorf("waiting for a free slot: %w", ctx.Err())
		}
		j.State, j.StartedAt = JobRunning, r.cfg.Now().UTC()
		r.save(ctx, j)
		backoff := r.cfg.Backoff
		for {
			j.Attempts++
			err := r.attempt(ctx, j, req)
			if err == nil {
				return nil
			}
			if !Retryable(err) || j.Attempts >= j.MaxAttempts || ctx.Err() != nil {
				return err
			}
			j.Error = err.Error()
			r.save(ctx, j)
			log.Info("power job attempt failed, retrying", "attempt", j.Attempts, "err", err, "backoff", backoff)
			if req.Op != OpStatus {
				r.event(ctx, j.Machine, EventPowerRetry, fmt.Sprintf("%s: attempt %d of %d failed: %v; retrying in %s",
					describe(j), j.Attempts, j.MaxAttempts, err, backoff))
			}
			if serr := sleepCtx(ctx, backoff); serr != nil {
				return fmt.Errorf("%w (then %v before the next attempt)", err, serr)
			}
			backoff = min(2*backoff, r.cfg.MaxBackoff)
		}
	}()

	j.FinishedAt = r.cfg.Now().UTC()
	if err == nil {
		j.State, j.Error = JobSucceeded, ""
	} else {
		j.State, j.Error = JobFailed, err.Error()
	}
	r.save(ctx, j)
	if j.Op == OpStatus {
		log.Debug("power status job finished", "state", string(j.State), "power", string(j.PowerState))
		return
	}
	if err == nil {
		log.Info("power job succeeded", "attempts", j.Attempts)
		r.event(ctx, j.Machine, EventPowerSucceeded, fmt.Sprintf("%s succeeded (attempt %d)", describe(j), j.Attempts))
		return
	}
	log.Warn("power job failed", "attempts", j.Attempts, "err", err)
	r.event(ctx, j.Machine, EventPowerFailed, fmt.Sprintf("%s failed after %d attempt(s): %v", describe(j), j.Attempts, err))
	r.audit(ctx, "system", "power-"+string(j.Op)+"-failed", j.Machine, fmt.Sprintf("%s failed after %d attempt(s)", describe(j), j.Attempts))
}

// attempt makes a driver, runs the operation once and closes the driver.
func (r *Runner) attempt(ctx context.Context, j *Job, req Request) (err error) {
	d, err := r.cfg.NewDriver(ctx, j.Machine, req.BMC)
	if err != nil {
		return err
	}
	defer func() {
		// Log out even when the job's context is done; a leaked session
		// counts against the BMC's (small) session limit.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if cerr := d.Close(cctx); cerr != nil {
			r.cfg.Logger.Debug("power driver close", "machine", j.Machine, "err", cerr)
		}
	}()
	switch req.Op {
	case OpOn:
		return d.PowerOn(ctx)
	case OpOff:
		return d.PowerOff(ctx)
	case OpCycle:
		return d.PowerCycle(ctx)
	case OpSoftOff:
		return d.SoftOff(ctx)
	case OpStatus:
		s, err := d.Status(ctx)
		if err == nil {
			j.PowerState = s
		}
		return err
	case OpSetBoot:
		return d.SetNextBoot(ctx, req.Device)
	case OpReprovision:
		if err := d.SetNextBoot(ctx, DevicePXE); err != nil {
			return err
		}
		return d.PowerCycle(ctx)
	}
	return fmt.Errorf("%w: operation %q", ErrConfig, req.Op)
}

// MemoryJobStore keeps jobs in memory, for tests and tools.
type MemoryJobStore struct {
	mu      sync.Mutex
	jobs    map[string]*Job
	history []Job
}

// SaveJob stores a copy of j.
func (m *MemoryJobStore) SaveJob(_ context.Context, j *Job) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.jobs == nil {
		m.jobs = map[string]*Job{}
	}
	m.jobs[j.ID] = j.copy()
	m.history = append(m.history, *j)
	return nil
}

// History returns every saved version of every job, in save order.
func (m *MemoryJobStore) History() []Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.history)
}

// Job returns a copy of a saved job.
func (m *MemoryJobStore) Job(id string) (*Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return nil, false
	}
	return j.copy(), true
}

// Jobs returns copies of all saved jobs, oldest first.
func (m *MemoryJobStore) Jobs() []*Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Job, 0, len(m.jobs))
	for _, j := range m.jobs {
		out = append(out, j.copy())
	}
	slices.SortFunc(out, func(a, b *Job) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}
