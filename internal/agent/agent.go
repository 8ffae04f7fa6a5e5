// Package agent is `kiln agent`: the program that runs on a machine booted into the
// agent environment (internal/image). It reports the machine's facts, asks Kiln for
// its workflow, runs the workflow's actions in order with the actions built in here
// (image2disk, partition, write-file, exec, reboot, poweroff, kexec), streams their
// progress and log lines, and reports each action's result.
//
// Kiln keeps the workflow's state, so the agent holds none that matters: after a
// restart of either side it asks again and skips what already succeeded. Kiln being
// unreachable only delays the agent (capped exponential backoff); an action's result
// is held, on disk too, until Kiln has it. Retries of a failing action happen here,
// with their attempt numbers reported.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// ActionFunc runs one attempt of an action. It returns nil on success; an error
// fails the attempt, with the error as the reason the server records.
type ActionFunc func(ctx context.Context, env *Env, args Args) error

// Agent runs workflows.
type Agent struct {
	// Transport reaches Kiln (an enrolled *MTLSTransport).
	Transport Transport
	// Actions by type; nil: Builtins().
	Actions map[string]ActionFunc
	// Facts collects what is reported before the first workflow; nil: none.
	Facts func(ctx context.Context) (map[string]any, error)
	// Dir keeps the agent's state (a result not yet delivered); "" keeps none.
	Dir    string
	Logger *slog.Logger
	// System is what actions act on; nil: the real machine.
	System *System
	// Backoff between retries of calls to Kiln (default 500ms doubling to 30s).
	Backoff Backoff
	// RetryBackoff between attempts of a failed action (default 2s doubling to 1m).
	RetryBackoff Backoff
	// PollInterval is how often to ask for a workflow when there is none (default 15s).
	PollInterval time.Duration
	// ProgressInterval is the most often progress is reported (default 1s).
	ProgressInterval time.Duration
	// HeartbeatInterval is how often a running action is reported when nothing
	// changed (default 15s): the answer tells the agent when Kiln has moved on.
	HeartbeatInterval time.Duration
	// RequestTimeout bounds each call to Kiln (default 30s).
	RequestTimeout time.Duration

	once sync.Once
	api  *apiClient
}

func (a *Agent) init() {
	a.once.Do(func() {
		if a.Logger == nil {
			a.Logger = slog.New(slog.DiscardHandler)
		}
		if a.Actions == nil {
			a.Actions = Builtins()
		}
		if a.System == nil {
			a.System = &System{}
		}
		if a.PollInterval <= 0 {
			a.PollInterval = 15 * time.Second
		}
		if a.ProgressInterval <= 0 {
			a.ProgressInterval = time.Second
		}
		if a.HeartbeatInterval <= 0 {
			a.HeartbeatInterval = 15 * time.Second
		}
		if a.RetryBackoff == (Backoff{}) {
			a.RetryBackoff = Backoff{Initial: 2 * time.Second, Max: time.Minute}
		}
		a.api = &apiClient{t: a.Transport, log: a.Logger, backoff: a.Backoff, requestTimeout: a.RequestTimeout}
	})
}

// Run reports facts, then runs workflows as Kiln hands them out. With once it
// runs the current workflow, if any, and returns. It returns when ctx ends (with
// ctx's error) or on an error that retrying cannot fix (a refused certificate).
func (a *Agent) Run(ctx context.Context, once bool) error {
	a.init()
	if a.Facts != nil {
		if err := a.SendFacts(ctx); err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			// Facts are informational: a refusal must not keep the machine from its workflow.
			a.Logger.Warn("facts not accepted", "err", err)
		}
	}
	for {
		found, err := a.RunWorkflow(ctx)
		if err != nil {
			return err
		}
		if once {
			return nil
		}
		wait := time.Second
		if !found {
			wait = time.Duration(float64(a.PollInterval) * (0.8 + 0.4*rand.Float64()))
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
}

// SendFacts collects and sends the machine's facts.
func (a *Agent) SendFacts(ctx context.Context) error {
	a.init()
	f, err := a.Facts(ctx)
	if err != nil {
		return fmt.Errorf("collect facts: %w", err)
	}
	return a.api.facts(ctx, f)
}

// RunWorkflow runs the current workflow from its first action that has not
// succeeded. found is false when Kiln has no workflow for this machine. A workflow
// that the server finishes or replaces meanwhile ends it without error.
func (a *Agent) RunWorkflow(ctx context.Context) (found bool, err error) {
	a.init()
	wf, err := a.api.workflow(ctx)
	if err != nil || wf == nil {
		return false, err
	}
	if delivered, err := a.deliverPending(ctx, wf); err != nil {
		return true, err
	} else if delivered {
		if wf, err = a.api.workflow(ctx); err != nil || wf == nil {
			return wf != nil, err
		}
	}
	log := a.Logger.With("workflow", wf.Name)
	if agentwire.Final(wf.Status.State) {
		return true, nil
	}
	log.Info("workflow", "state", wf.Status.State, "actions", len(wf.Status.Actions))
	for _, act := range wf.Status.Actions {
		switch {
		case act.State == agentwire.Succeeded:
			log.Info("action already succeeded; skipping", "action", act.Name)
			continue
		case agentwire.Final(act.State):
			log.Info("action is final; workflow over", "action", act.Name, "state", act.State)
			return true, nil
		}
		rep, after, err := a.runAction(ctx, wf.Name, act)
		if errors.Is(err, ErrMovedOn) {
			log.Info("workflow ended on the server; stopping", "action", act.Name, "err", err)
			return true, nil
		}
		if err != nil {
			return true, err
		}
		a.savePending(wf.Name, act.Name, rep)
		err = a.api.reportReliably(ctx, wf.Name, act.Name, rep)
		if err == nil || errors.Is(err, ErrMovedOn) {
			a.clearPending()
		}
		if errors.Is(err, ErrMovedOn) {
			log.Info("workflow ended on the server; stopping", "action", act.Name, "err", err)
			return true, nil
		}
		if err != nil {
			return true, fmt.Errorf("report action %s: %w", act.Name, err)
		}
		log.Info("action finished", "action", act.Name, "state", rep.State, "attempt", rep.Attempt, "message", rep.Message)
		if rep.State != agentwire.Succeeded {
			return true, nil
		}
		if after != nil {
			if err := after(); err != nil {
				log.Error("after action", "action", act.Name, "err", err)
			}
		}
	}
	return true, nil
}

// errActionTimeout is the cause of an action context that ran out of time.
var errActionTimeout = errors.New("action timed out")

// runAction runs an action's attempts and returns its final report. err is set only
// when there is nothing to report: the agent is stopping or the server moved on.
func (a *Agent) runAction(ctx context.Context, wfName string, act agentwire.ActionStatus) (agentwire.Report, func() error, error) {
	log := a.Logger.With("workflow", wfName, "action", act.Name, "type", act.Type)
	timeout, err := time.ParseDuration(act.Timeout)
	if err != nil || timeout <= 0 {
		timeout = agentwire.DefaultActionTimeout
	}
	fn := a.Actions[act.Type]
	// Attempts go on from what the server saw: an agent that restarted mid-action
	// runs it again as the next attempt, and gets at least that one.
	first := 1
	if act.State == agentwire.Running {
		first = act.Attempts + 1
	}
	last := max(act.Retries+1, first)
	for attempt := first; ; attempt++ {
		if err := a.api.reportReliably(ctx, wfName, act.Name, agentwire.Report{State: agentwire.Running, Attempt: attempt}); err != nil {
			return agentwire.Report{}, nil, err
		}
		log.Info("action started", "attempt", attempt, "of", last, "timeout", timeout)
		env := &Env{System: a.System, Workflow: wfName, Action: act.Name, Type: act.Type, Attempt: attempt,
			kiln: a.Transport, logger: log}
		env.rep = &reporter{}
		var runErr error
		if fn == nil {
			runErr = fmt.Errorf("action type %q is not built into this agent", act.Type)
		} else {
			runErr = a.attempt(ctx, env, fn, Args(act.Args), timeout, wfName, act.Name)
		}
		if ctx.Err() != nil {
			return agentwire.Report{}, nil, context.Cause(ctx)
		}
		if errors.Is(runErr, ErrMovedOn) {
			return agentwire.Report{}, nil, runErr
		}
		logs := env.rep.takeLogs(-1)
		// Log lines beyond one report's share go first, in order.
		for len(logs) > maxLogBatch {
			batch := logs[:maxLogBatch]
			logs = logs[maxLogBatch:]
			if err := a.api.reportReliably(ctx, wfName, act.Name, agentwire.Report{State: agentwire.Running, Attempt: attempt, Log: batch}); err != nil {
				return agentwire.Report{}, nil, err
			}
		}
		rep := agentwire.Report{Attempt: attempt, Log: logs, Progress: env.rep.lastProgress()}
		if runErr == nil {
			rep.State, rep.Message = agentwire.Succeeded, env.message
			return rep, env.after, nil
		}
		log.Warn("action attempt failed", "attempt", attempt, "of", last, "err", runErr)
		rep.State, rep.Message = agentwire.Failed, runErr.Error()
		if attempt >= last || errors.Is(runErr, errPermanent) {
			if attempt > 1 {
				rep.Message = fmt.Sprintf("attempt %d of %d: %s", attempt, last, runErr)
			}
			return rep, nil, nil
		}
		d := a.RetryBackoff.Delay(attempt - first + 1)
		rep.State = agentwire.Running
		rep.Log = append(rep.Log, truncateLine(fmt.Sprintf("attempt %d failed: %v; retrying in %s", attempt, runErr, d.Round(time.Millisecond))))
		rep.Message = fmt.Sprintf("attempt %d failed: %v", attempt, runErr)
		if err := a.api.reportReliably(ctx, wfName, act.Name, rep); err != nil {
			return agentwire.Report{}, nil, err
		}
		if err := sleepCtx(ctx, d); err != nil {
			return agentwire.Report{}, nil, err
		}
	}
}

// errPermanent marks an action error that no retry can fix (bad arguments).
var errPermanent = errors.New("not retried")

type permanentError struct{ err error }

func (p permanentError) Error() string        { return p.err.Error() }
func (p permanentError) Unwrap() error        { return p.err }
func (p permanentError) Is(target error) bool { return target == errPermanent }

// permanent marks err as not worth retrying: the same arguments fail the same way.
func permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// attempt runs fn once under the action's timeout, streaming progress meanwhile.
func (a *Agent) attempt(ctx context.Context, env *Env, fn ActionFunc, args Args, timeout time.Duration, wfName, action string) (err error) {
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	actx, cancelT := context.WithTimeoutCause(cctx, timeout, errActionTimeout)
	defer cancelT()

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.stream(cctx, cancel, env, wfName, action, done)
	}()
	defer func() {
		close(done)
		wg.Wait()
		if cause := context.Cause(cctx); errors.Is(cause, ErrMovedOn) {
			err = cause
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("action panicked: %v\n%s", r, debug.Stack())
		}
	}()
	err = fn(actx, env, args)
	if err != nil && errors.Is(context.Cause(actx), errActionTimeout) {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return err
}

// stream reports progress and log lines of a running attempt at most every
// ProgressInterval, and at least every HeartbeatInterval. It never blocks the action: a report that fails is retried
// at the next tick (its log lines kept), and one that is refused with 409 stops
// the action.
func (a *Agent) stream(ctx context.Context, cancel context.CancelCauseFunc, env *Env, wfName, action string, done <-chan struct{}) {
	t := time.NewTicker(a.ProgressInterval)
	defer t.Stop()
	lastSent := time.Now()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		prog, changed := env.rep.progressIfChanged()
		logs := env.rep.takeLogs(maxLogBatch)
		if !changed && len(logs) == 0 && time.Since(lastSent) < a.HeartbeatInterval {
			continue
		}
		lastSent = time.Now()
		err := a.api.report(ctx, wfName, action, agentwire.Report{State: agentwire.Running, Attempt: env.Attempt, Progress: prog, Log: logs})
		switch {
		case err == nil:
		case errors.Is(err, ErrMovedOn):
			cancel(err)
			return
		default:
			env.rep.putBackLogs(logs)
			if changed {
				env.rep.markProgressDirty()
			}
			a.Logger.Debug("progress report", "action", action, "err", err)
		}
	}
}

// pendingReport is a final report not yet delivered, kept on disk so that an agent
// restart re-sends it rather than redoing the action.
type pendingReport struct {
	Workflow string           `json:"workflow"`
	Action   string           `json:"action"`
	Report   agentwire.Report `json:"report"`
}

func (a *Agent) pendingPath() string {
	if a.Dir == "" {
		return ""
	}
	return filepath.Join(a.Dir, "pending-report.json")
}

func (a *Agent) savePending(wf, action string, r agentwire.Report) {
	p := a.pendingPath()
	if p == "" {
		return
	}
	b, _ := json.Marshal(pendingReport{Workflow: wf, Action: action, Report: r})
	if err := os.MkdirAll(a.Dir, 0o700); err == nil {
		tmp := p + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, p)
		}
		if err != nil {
			a.Logger.Warn("cannot keep the result on disk", "err", err)
		}
	}
}

func (a *Agent) clearPending() {
	if p := a.pendingPath(); p != "" {
		os.Remove(p)
	}
}

// deliverPending sends a result left by an earlier run of the agent, if it belongs
// to this workflow and the server does not have it yet.
func (a *Agent) deliverPending(ctx context.Context, wf *agentwire.WorkflowResponse) (bool, error) {
	p := a.pendingPath()
	if p == "" {
		return false, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return false, nil
	}
	var pr pendingReport
	if json.Unmarshal(b, &pr) != nil || pr.Workflow != wf.Name {
		a.clearPending()
		return false, nil
	}
	for _, act := range wf.Status.Actions {
		if act.Name != pr.Action {
			continue
		}
		if agentwire.Final(act.State) {
			break
		}
		a.Logger.Info("delivering a result held from before a restart", "workflow", pr.Workflow, "action", pr.Action, "state", pr.Report.State)
		err := a.api.reportReliably(ctx, pr.Workflow, pr.Action, pr.Report)
		if err != nil && !errors.Is(err, ErrMovedOn) {
			return false, err
		}
		a.clearPending()
		return true, nil
	}
	a.clearPending()
	return false, nil
}

// Env is what an action sees of the agent: the system, where to log, how to report
// progress.
type Env struct {
	*System
	Workflow, Action, Type string
	Attempt                int

	kiln    Transport
	logger  *slog.Logger
	rep     *reporter
	message string
	after   func() error
}

// Get downloads url. A URL on Kiln's own host goes through the agent's client (it
// trusts Kiln's CA); another host through a client with the system's roots. Neither
// has an overall timeout, which a large image would hit: the action's timeout
// bounds the download instead. A relative URL ("/artifacts/NAME", what Kiln renders
// when it has no public URL) is resolved against the URL the agent reached Kiln by.
func (e *Env) Get(ctx context.Context, rawURL string) (*http.Response, error) {
	return e.get(ctx, rawURL, nil, http.StatusOK)
}

// getRange asks for rawURL from byte offset on (RFC 9110 14.2), only if it is
// still the representation etag names (If-Match): a 206 whose Content-Range
// starts at offset, or an error.
func (e *Env) getRange(ctx context.Context, rawURL string, offset int64, etag string) (*http.Response, error) {
	h := http.Header{"Range": {fmt.Sprintf("bytes=%d-", offset)}}
	if etag != "" {
		h.Set("If-Match", etag)
	}
	resp, err := e.get(ctx, rawURL, h, http.StatusPartialContent)
	if err != nil {
		return nil, err
	}
	var start int64
	if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start); err != nil || start != offset {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s from byte %d: Content-Range %q", redactURL(rawURL), offset, resp.Header.Get("Content-Range"))
	}
	return resp, nil
}

func (e *Env) get(ctx context.Context, rawURL string, h http.Header, want int) (*http.Response, error) {
	if e.kiln != nil {
		if u, err := url.Parse(rawURL); err == nil && u.Scheme == "" && u.Host == "" {
			if base, err := url.Parse(e.kiln.BaseURL()); err == nil && base.Host != "" {
				rawURL = base.ResolveReference(u).String()
			}
		}
	}
	c := e.System.HTTP
	if c == nil {
		if e.kiln != nil && sameHost(rawURL, e.kiln.BaseURL()) {
			cc := *e.kiln.Client()
			cc.Timeout = 0
			c = &cc
		} else {
			c = &http.Client{}
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, permanent(fmt.Errorf("url %q: %w", rawURL, err))
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", redactURL(rawURL), err)
	}
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		msg := strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return nil, fmt.Errorf("GET %s: %s: %s", redactURL(rawURL), resp.Status, msg)
	}
	return resp, nil
}

// redactURL drops the userinfo and query of a URL for messages (they may hold
// credentials).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "..."
	}
	return u.String()
}

// Logf adds a log line to the action's report (and the agent's own log).
func (e *Env) Logf(format string, args ...any) {
	line := truncateLine(fmt.Sprintf(format, args...))
	e.logger.Info(line)
	e.rep.addLog(line)
}

// Progress records how far the action is; total 0 when unknown.
func (e *Env) Progress(done, total int64) { e.rep.setProgress(done, total) }

// SetMessage sets the message reported with success (a summary).
func (e *Env) SetMessage(format string, args ...any) { e.message = fmt.Sprintf(format, args...) }

// AfterReport registers f to run once the action's success has been reported:
// reboot, poweroff and kexec end the agent, so they act only when Kiln knows.
func (e *Env) AfterReport(f func() error) { e.after = f }

func truncateLine(s string) string {
	s = strings.TrimRight(s, "\r\n")
	if len(s) > 2000 {
		return s[:2000] + "..."
	}
	return s
}

// reporter holds what the next progress report carries.
type reporter struct {
	mu       sync.Mutex
	logs     []string
	dropped  int
	progress *agentwire.Progress
	dirty    bool
}

// maxHeldLogs bounds the lines held while Kiln is unreachable; older ones are
// dropped (and counted) first.
const maxHeldLogs = 1000

func (r *reporter) addLog(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, line)
	if over := len(r.logs) - maxHeldLogs; over > 0 {
		r.logs = append(r.logs[:0:0], r.logs[over:]...)
		r.dropped += over
	}
}

// takeLogs removes and returns up to n lines (n < 0: all).
func (r *reporter) takeLogs(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	if r.dropped > 0 {
		out = append(out, fmt.Sprintf("(%d log lines dropped while Kiln was unreachable)", r.dropped))
		r.dropped = 0
	}
	if n < 0 || n > len(r.logs) {
		n = len(r.logs)
	}
	out = append(out, r.logs[:n]...)
	r.logs = r.logs[n:]
	return out
}

func (r *reporter) putBackLogs(lines []string) {
	if len(lines) == 0 {
		return
	}
	r.mu.Lock()
	r.logs = append(append([]string{}, lines...), r.logs...)
	r.mu.Unlock()
}

func (r *reporter) setProgress(done, total int64) {
	p := &agentwire.Progress{Bytes: done, Total: total}
	if total > 0 {
		p.Percent = float64(int(float64(done)*1000/float64(total))) / 10
	}
	r.mu.Lock()
	r.progress, r.dirty = p, true
	r.mu.Unlock()
}

func (r *reporter) progressIfChanged() (*agentwire.Progress, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.dirty {
		return r.progress, false
	}
	r.dirty = false
	return r.progress, true
}

func (r *reporter) markProgressDirty() {
	r.mu.Lock()
	r.dirty = true
	r.mu.Unlock()
}

func (r *reporter) lastProgress() *agentwire.Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.progress
}

// sameHost reports whether u is on the host of base.
func sameHost(u, base string) bool {
	a, err1 := url.Parse(u)
	b, err2 := url.Parse(base)
	return err1 == nil && err2 == nil && a.Host == b.Host
}

// RunLocal runs one built-in action here, without Kiln: to try a template's action
// on a machine by hand, and for benchmarks. Log lines and progress (every second)
// go to log. An action that acts after its report (reboot, poweroff, kexec) acts
// when it succeeded.
func RunLocal(ctx context.Context, sys *System, typ string, args Args, timeout time.Duration, log *slog.Logger) (string, error) {
	fn, ok := Builtins()[typ]
	if !ok {
		return "", fmt.Errorf("action type %q is not built in (one of image2disk, partition, write-file, exec, reboot, poweroff, kexec)", typ)
	}
	if sys == nil {
		sys = &System{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if timeout <= 0 {
		timeout = agentwire.DefaultActionTimeout
	}
	env := &Env{System: sys, Action: typ, Type: typ, Attempt: 1, logger: log, rep: &reporter{}}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errActionTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if p, changed := env.rep.progressIfChanged(); changed && p != nil {
					log.Info("progress", "bytes", p.Bytes, "total", p.Total, "percent", p.Percent)
				}
			}
		}
	}()
	err := fn(ctx, env, args)
	close(done)
	if err != nil && errors.Is(context.Cause(ctx), errActionTimeout) {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	if err == nil && env.after != nil {
		err = env.after()
	}
	return env.message, err
}
