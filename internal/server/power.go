package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/httpjson"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/power"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/secrets"
	"github.com/kilnhq/kiln/internal/store"
)

// powerService runs power jobs on machines' BMCs. Jobs are PowerJob objects (status
// holds progress and result), every request and failure is audited, and each step is
// an event on the machine.
type powerService struct {
	st     store.Store
	inv    *inventory.Service
	runner *power.Runner
	owner  string // this server in Job.Owner
}

// bmcCredentials reads machine's BMC credentials from a Secret whose value is
// "username:password" (the first colon splits) or {"username": ..., "password": ...}.
// The Secret's release rules must allow the machine, as for any release to a machine:
// a BMC address is where the credential goes. Each read is an audited release.
type bmcCredentials struct {
	sec     *secrets.Service
	machine string
}

func (c bmcCredentials) BMCCredentials(ctx context.Context, name string) (string, string, error) {
	v, err := c.sec.ReleaseToBMC(ctx, c.machine, name)
	if errors.Is(err, secrets.ErrDenied) {
		// The rules will not change between attempts: no retry.
		return "", "", fmt.Errorf("bmc credentials secret %q: %w: %w", name, power.ErrConfig, err)
	}
	if err != nil {
		return "", "", fmt.Errorf("bmc credentials secret %q: %w", name, err)
	}
	var j struct{ Username, Password string }
	if json.Unmarshal(v, &j) == nil && j.Username != "" {
		return j.Username, j.Password, nil
	}
	user, pass, ok := strings.Cut(strings.TrimRight(string(v), "\r\n"), ":")
	if !ok {
		return "", "", fmt.Errorf("bmc credentials secret %q: value is not \"username:password\" or {\"username\",\"password\"}", name)
	}
	return user, pass, nil
}

func newPowerService(st store.Store, inv *inventory.Service, sec *secrets.Service, s *Server) *powerService {
	p := &powerService{st: st, inv: inv, owner: powerOwner(s.cfg.DataDir)}
	p.runner = power.NewRunner(power.RunnerConfig{
		NewDriver: func(ctx context.Context, machine string, b resource.BMC) (power.Driver, error) {
			return power.New(ctx, b, bmcCredentials{sec: sec, machine: machine}, power.Options{Logger: s.log})
		},
		Jobs:        p,
		Recorder:    p,
		Parallelism: 16,
		Attempts:    3,
		Timeout:     10 * time.Minute,
		Logger:      s.log,
		Owner:       p.owner,
	})
	return p
}

// powerOwner names this server in the jobs it runs: the host and the data
// directory, the same across restarts and different for each replica.
func powerOwner(dataDir string) string {
	host, _ := os.Hostname()
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	return host + ":" + dataDir
}

// jobSweepSlack is how long past its timeout a running job must be before the
// sweep takes its runner for dead.
const jobSweepSlack = time.Minute

// sweepJobs fails the power jobs that no runner will finish, so that none stays
// pending or running for ever: at startup, the jobs this server accepted before
// it stopped (kill -9, a crash, a shutdown in the middle of a job), and at any
// time, jobs running longer than a job may (their server died). The machine's
// power state is then unknown; the job's error says so. It returns how many
// jobs it failed.
func (p *powerService) sweepJobs(ctx context.Context, startup bool, now time.Time) (int, error) {
	var stale []*resource.Object
	err := p.st.View(ctx, func(tx store.Tx) error {
		cont := ""
		for {
			objs, next, err := tx.List(ctx, "PowerJob", store.ListOptions{Limit: 1000, Continue: cont})
			if err != nil {
				return err
			}
			for _, o := range objs {
				var j power.Job
				if json.Unmarshal(o.Status, &j) != nil || j.Done() {
					continue
				}
				mine := startup && j.Owner == p.owner
				overdue := j.State == power.JobRunning && !j.StartedAt.IsZero() &&
					now.Sub(j.StartedAt) > p.runner.Timeout()+jobSweepSlack
				if mine || overdue {
					stale = append(stale, o)
				}
			}
			if next == "" {
				return nil
			}
			cont = next
		}
	})
	if err != nil {
		return 0, fmt.Errorf("power jobs sweep: %w", err)
	}
	failed := 0
	for _, o := range stale {
		var j power.Job
		if err := json.Unmarshal(o.Status, &j); err != nil {
			continue
		}
		why := "the server running it stopped"
		if startup && j.Owner == p.owner {
			why = "kiln serve stopped before it finished"
		}
		was := j.State
		j.State, j.FinishedAt = power.JobFailed, now.UTC()
		j.Error = fmt.Sprintf("interrupted: %s (it was %s); the machine's power state is unknown: run kiln machine power status %s", why, was, j.Machine)
		status, err := json.Marshal(&j)
		if err != nil {
			continue
		}
		err = p.st.Update(ctx, func(tx store.Tx) error {
			cur, err := tx.Get(ctx, "PowerJob", o.Metadata.Name)
			if err != nil {
				return err
			}
			if cur.Metadata.ResourceVersion != o.Metadata.ResourceVersion {
				return nil // its runner moved it on meanwhile: not stale
			}
			cur.Status = status
			if err := tx.Update(ctx, cur); err != nil {
				return err
			}
			failed++
			summary := fmt.Sprintf("power job %s (%s) failed: %s", j.ID, j.Op, why)
			return tx.AppendAudit(ctx, &audit.Entry{Time: now.UTC(), Actor: "system", Action: "power-interrupted", Kind: "Machine", Name: j.Machine, Summary: summary})
		})
		if err != nil {
			return failed, fmt.Errorf("power jobs sweep: fail job %s: %w", o.Metadata.Name, err)
		}
		p.Event(ctx, j.Machine, power.EventPowerFailed, j.Error)
	}
	return failed, nil
}

// SaveJob implements power.JobStore.
func (p *powerService) SaveJob(ctx context.Context, j *power.Job) error {
	status, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return p.st.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.Get(ctx, "PowerJob", j.ID)
		if errors.Is(err, store.ErrNotFound) {
			spec, _ := json.Marshal(resource.PowerJobSpec{Machine: j.Machine, Op: string(j.Op), Device: string(j.Device), Actor: j.Actor})
			return tx.Create(ctx, &resource.Object{APIVersion: resource.APIVersion, Kind: "PowerJob",
				Metadata: resource.Metadata{Name: j.ID, Labels: map[string]string{"kiln.dev/machine": j.Machine}}, Spec: spec, Status: status})
		}
		if err != nil {
			return err
		}
		cur.Status = status
		return tx.Update(ctx, cur)
	})
}

// Event implements power.Recorder.
func (p *powerService) Event(ctx context.Context, machine, typ, msg string) {
	_ = p.inv.AddEvent(ctx, store.Event{Machine: machine, Type: typ, Message: msg})
}

// Audit implements power.Recorder.
func (p *powerService) Audit(ctx context.Context, actor, action, machine, summary string) {
	_ = p.st.Update(ctx, func(tx store.Tx) error {
		return tx.AppendAudit(ctx, &audit.Entry{Time: time.Now().UTC(), Actor: actor, Action: action, Kind: "Machine", Name: machine, Summary: summary})
	})
}

// PowerRequest asks for a power operation on one machine or on every machine a
// label selector picks.
type PowerRequest struct {
	Op       string `json:"op"`
	Device   string `json:"device,omitempty"`
	Selector string `json:"selector,omitempty"`
	// Wait runs the job before answering (status always waits).
	Wait bool `json:"wait,omitempty"`
}

// PowerResponse lists the jobs a request made.
type PowerResponse struct {
	Jobs []*power.Job `json:"jobs"`
}

func (p *powerService) targets(ctx context.Context, name, selector string) ([]power.Target, error) {
	var objs []*resource.Object
	if name != "" {
		m, err := p.inv.Get(ctx, "Machine", name)
		if err != nil {
			return nil, err
		}
		objs = []*resource.Object{m}
	} else {
		sel, err := resource.ParseSelector(selector)
		if err != nil {
			return nil, &inventory.ValidationError{Err: err}
		}
		if sel.Empty() {
			return nil, &inventory.ValidationError{Err: errors.New("selector: required for a fleet-wide request")}
		}
		objs, _, err = p.inv.List(ctx, "Machine", store.ListOptions{Selector: sel})
		if err != nil {
			return nil, err
		}
	}
	var out []power.Target
	for _, o := range objs {
		ms, err := resource.Typed[resource.MachineSpec](o)
		if err != nil {
			return nil, err
		}
		if ms.BMC == nil {
			if name != "" {
				return nil, &inventory.ValidationError{Err: fmt.Errorf("machine %q has no spec.bmc", o.Metadata.Name)}
			}
			continue
		}
		out = append(out, power.Target{Machine: o.Metadata.Name, BMC: *ms.BMC})
	}
	return out, nil
}

func validOp(op string) bool {
	switch power.Op(op) {
	case power.OpOn, power.OpOff, power.OpCycle, power.OpSoftOff, power.OpStatus, power.OpSetBoot, power.OpReprovision:
		return true
	}
	return false
}

// handle serves POST /api/v1/machines/{name}/power and POST /api/v1/power.
func (p *powerService) handle(w http.ResponseWriter, r *http.Request) {
	var req PowerRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		httpjson.Error(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return
	}
	if !validOp(req.Op) {
		httpjson.Error(w, http.StatusUnprocessableEntity, fmt.Sprintf("op: %q is not one of on, off, cycle, soft-off, status, set-boot, reprovision", req.Op))
		return
	}
	if req.Op == string(power.OpSetBoot) && req.Device == "" {
		req.Device = string(power.DevicePXE)
	}
	targets, err := p.targets(r.Context(), r.PathValue("name"), req.Selector)
	var ve *inventory.ValidationError
	switch {
	case errors.As(err, &ve):
		httpjson.Error(w, http.StatusUnprocessableEntity, err.Error())
		return
	case errors.Is(err, store.ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, err.Error())
		return
	case err != nil:
		httpjson.Error(w, http.StatusInternalServerError, "cannot read machines")
		return
	}
	actor := api.ActorOf(r).ID
	reqs := make([]power.Request, len(targets))
	for i, t := range targets {
		reqs[i] = power.Request{Target: t, Op: power.Op(req.Op), Device: power.Device(req.Device), Actor: actor}
	}
	var jobs []*power.Job
	code := http.StatusAccepted
	if req.Wait || req.Op == string(power.OpStatus) {
		jobs, code = p.runner.RunAll(r.Context(), reqs), http.StatusOK
	} else {
		jobs, err = p.runner.SubmitAll(context.WithoutCancel(r.Context()), reqs)
		if err != nil {
			httpjson.Error(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	httpjson.Write(w, code, PowerResponse{Jobs: jobs})
}

// cycleAfterSlotDeadline power-cycles a machine whose upgraded A/B slot did not
// phone home in time: a hung boot then counts as a failed try, and systemd-boot
// falls back to the other slot once the tries are used. Machines without a BMC are
// left alone ("" and no error).
func (p *powerService) cycleAfterSlotDeadline(ctx context.Context, machine string) (string, error) {
	targets, err := p.targets(ctx, machine, "")
	var ve *inventory.ValidationError
	if errors.As(err, &ve) {
		return "", nil // no BMC
	}
	if err != nil || len(targets) == 0 {
		return "", err
	}
	j, err := p.runner.Submit(context.Background(), power.Request{Target: targets[0], Op: power.OpCycle, Actor: "kiln:slot-deadline"})
	if err != nil {
		return "", err
	}
	return j.ID, nil
}

// reprovision sets next boot to PXE once and power-cycles, for `kiln machine
// reprovision`; machines without a BMC are left to be rebooted by hand.
func (p *powerService) reprovision(ctx context.Context, actor, machine string) (string, error) {
	targets, err := p.targets(ctx, machine, "")
	var ve *inventory.ValidationError
	if errors.As(err, &ve) {
		return "", nil // no BMC
	}
	if err != nil || len(targets) == 0 {
		return "", err
	}
	j, err := p.runner.Submit(context.Background(), power.Request{Target: targets[0], Op: power.OpReprovision, Actor: actor})
	if err != nil {
		return "", err
	}
	return j.ID, nil
}
