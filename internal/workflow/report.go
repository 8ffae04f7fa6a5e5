package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/safetext"
	"github.com/kilnhq/kiln/internal/store"
)

// Report is what the agent says about one action.
type Report = agentwire.Report

// LogEventType is the event type of agent log lines (`kiln logs machine`).
const LogEventType = "AgentLog"

// Fetch returns the machine's current workflow for its agent and records that the
// machine fetched it: reports are accepted only after (see Apply). It returns
// store.ErrNotFound when the machine has no workflow to run.
func (e *Engine) Fetch(ctx context.Context, machine string) (*agentwire.WorkflowResponse, error) {
	var out *agentwire.WorkflowResponse
	err := e.Store.Update(ctx, func(tx store.Tx) error {
		wf, st, err := Current(ctx, tx, machine)
		if err != nil {
			return err
		}
		now := e.now()
		st.FetchedAt = &now
		if err := saveStatus(ctx, tx, wf, st); err != nil {
			return fmt.Errorf("record the fetch of workflow %q: %w", wf.Metadata.Name, err)
		}
		out = &agentwire.WorkflowResponse{Name: wf.Metadata.Name, Status: st}
		return nil
	})
	return out, err
}

// Apply records an agent's report on its current workflow. The machine must have
// fetched the workflow first, and actions run in order: a report is accepted only for
// the action the server waits for (every earlier one succeeded), and nothing on a
// finished workflow, so a machine certificate alone cannot walk a machine to
// provisioned. The same final report repeated (an agent retrying a report whose
// answer it lost) is answered with the status, unchanged. A refused report is
// audited. The machine's state follows the workflow's outcome.
func (e *Engine) Apply(ctx context.Context, machine, workflowName, action string, r Report) (*Status, error) {
	st, err := e.apply(ctx, machine, workflowName, action, r)
	if errors.Is(err, ErrBadReport) {
		e.auditRefusedReport(ctx, machine, workflowName, action, r.State, err)
	}
	return st, err
}

// auditRefusedReport records a refused report: a confused agent, or a machine
// certificate used to fake progress.
func (e *Engine) auditRefusedReport(ctx context.Context, machine, workflowName, action, state string, reason error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = e.Store.Update(ctx, func(tx store.Tx) error {
		return tx.AppendAudit(ctx, &audit.Entry{Time: e.now(), Actor: "machine:" + machine, Action: "report-refused", Kind: "Machine", Name: machine,
			Summary: truncate(fmt.Sprintf("report %q on action %q of workflow %q refused: %v", truncate(state, 20), truncate(action, 100), truncate(workflowName, 200), reason), 1000)})
	})
}

func (e *Engine) apply(ctx context.Context, machine, workflowName, action string, r Report) (*Status, error) {
	var out *Status
	err := e.Store.Update(ctx, func(tx store.Tx) error {
		wf, err := tx.Get(ctx, "Workflow", workflowName)
		if err != nil {
			return fmt.Errorf("workflow %q: %w", workflowName, err)
		}
		ws, err := resource.Typed[resource.WorkflowSpec](wf)
		if err != nil {
			return err
		}
		if ws.Machine != machine {
			return fmt.Errorf("%w: workflow %q belongs to another machine", store.ErrNotFound, workflowName)
		}
		st, err := StatusOf(wf)
		if err != nil {
			return err
		}
		// Action names are unique in a template (TemplateSpec.Validate).
		idx := slices.IndexFunc(st.Actions, func(a ActionStatus) bool { return a.Name == action })
		if idx >= 0 && st.FetchedAt != nil && Final(r.State) && st.Actions[idx].State == r.State {
			out = st // a retried report: already recorded
			return nil
		}
		if Final(st.State) {
			return fmt.Errorf("%w: workflow %q is already %s", ErrBadReport, workflowName, st.State)
		}
		if st.FetchedAt == nil {
			return fmt.Errorf("%w: workflow %q was not fetched by the machine (GET %s) since it was created; an agent fetches its workflow before it reports", ErrBadReport, workflowName, agentwire.WorkflowPath)
		}
		if idx < 0 {
			return fmt.Errorf("%w: workflow %q has no action %q", ErrBadReport, workflowName, action)
		}
		for i := 0; i < idx; i++ {
			if st.Actions[i].State != Succeeded {
				return fmt.Errorf("%w: action %q reported before %q succeeded", ErrBadReport, action, st.Actions[i].Name)
			}
		}
		a := &st.Actions[idx]
		if Final(a.State) {
			return fmt.Errorf("%w: action %q is already %s", ErrBadReport, action, a.State)
		}
		now := e.now()
		if st.StartedAt == nil {
			st.StartedAt = &now
		}
		st.State, st.Current = Running, action
		if a.StartedAt == nil {
			a.StartedAt = &now
		}
		if r.Attempt > a.Attempts {
			a.Attempts = r.Attempt
		}
		if a.Attempts == 0 {
			a.Attempts = 1
		}
		if r.Progress != nil {
			a.Progress = r.Progress
		}
		if r.Message != "" {
			a.Message = truncate(r.Message, 1000)
		}
		if len(r.Log) > 0 {
			a.Log = append(a.Log, r.Log...)
			if len(a.Log) > MaxLogLines {
				a.Log = a.Log[len(a.Log)-MaxLogLines:]
			}
			for _, l := range r.Log {
				if err := tx.AddEvent(ctx, &store.Event{Machine: machine, Time: now, Type: LogEventType, Message: action + ": " + truncate(l, 2000)}); err != nil {
					return err
				}
			}
		}
		event := func(typ, msg string) error {
			return tx.AddEvent(ctx, &store.Event{Machine: machine, Time: now, Type: typ, Message: msg})
		}
		switch r.State {
		case Running:
			if a.State == Pending {
				a.State = Running
				if err := event("ActionStarted", fmt.Sprintf("%s (%s)", action, a.Type)); err != nil {
					return err
				}
			}
		case Succeeded:
			a.State, a.FinishedAt = Succeeded, &now
			if err := event("ActionSucceeded", fmt.Sprintf("%s in %s", action, now.Sub(*a.StartedAt).Round(time.Millisecond))); err != nil {
				return err
			}
			if idx == len(st.Actions)-1 {
				if err := e.finish(ctx, tx, machine, wf.Metadata.Name, st, Succeeded, "all actions succeeded"); err != nil {
					return err
				}
			}
		case Failed:
			a.State, a.FinishedAt = Failed, &now
			msg := fmt.Sprintf("action %s failed: %s", action, a.Message)
			if err := event("ActionFailed", msg); err != nil {
				return err
			}
			if err := e.finish(ctx, tx, machine, wf.Metadata.Name, st, Failed, msg); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: state %q is not running, succeeded or failed", ErrBadReport, r.State)
		}
		out = st
		return saveStatus(ctx, tx, wf, st)
	})
	return out, err
}

var finishEvent = map[string]string{Succeeded: "WorkflowSucceeded", Failed: "WorkflowFailed", TimedOut: "WorkflowTimedOut"}

// finish ends a workflow and moves the machine: provisioned on success, failed else.
func (e *Engine) finish(ctx context.Context, tx store.Tx, machine, wfName string, st *Status, state, msg string) error {
	now := e.now()
	st.State, st.FinishedAt, st.Message = state, &now, msg
	m, err := tx.Get(ctx, "Machine", machine)
	if err != nil {
		return err
	}
	ms := resource.StateFailed
	if state == Succeeded {
		ms = resource.StateProvisioned
	}
	if err := setMachineState(ctx, tx, m, ms); err != nil {
		return err
	}
	if state == Succeeded {
		if err := e.recordSlotUpgrade(ctx, tx, m, wfName, st); err != nil {
			return err
		}
	}
	if err := tx.AddEvent(ctx, &store.Event{Machine: machine, Time: now, Type: finishEvent[state],
		Message: fmt.Sprintf("workflow %s %s: %s; machine is %s", wfName, state, msg, ms)}); err != nil {
		return err
	}
	return tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "workflow", Action: "workflow-" + state, Kind: "Machine", Name: machine,
		Summary: fmt.Sprintf("workflow %s %s; state %s", wfName, state, ms)})
}

// Sweep times out workflows and running actions past their deadlines. An action's
// budget is its timeout for each attempt (retries + 1), as the agent retries locally.
func (e *Engine) Sweep(ctx context.Context) (int, error) {
	n := 0
	err := e.Store.Update(ctx, func(tx store.Tx) error {
		wfs, _, err := tx.List(ctx, "Workflow", store.ListOptions{})
		if err != nil {
			return err
		}
		now := e.now()
		for _, wf := range wfs {
			st, err := StatusOf(wf)
			if err != nil || Final(st.State) || st.StartedAt == nil {
				continue
			}
			ws, err := resource.Typed[resource.WorkflowSpec](wf)
			if err != nil {
				continue
			}
			reason := ""
			if d, err := time.ParseDuration(st.Timeout); err == nil && now.Sub(*st.StartedAt) > d {
				reason = fmt.Sprintf("workflow exceeded its timeout of %s", st.Timeout)
			}
			for i := range st.Actions {
				a := &st.Actions[i]
				if a.State != Running || a.StartedAt == nil {
					continue
				}
				d, err := time.ParseDuration(a.Timeout)
				if err == nil && now.Sub(*a.StartedAt) > d*time.Duration(a.Retries+1) {
					a.State, a.FinishedAt = TimedOut, &now
					a.Message = fmt.Sprintf("no result within %s x %d attempts", a.Timeout, a.Retries+1)
					reason = fmt.Sprintf("action %s timed out (%s)", a.Name, a.Message)
				}
			}
			if reason == "" {
				continue
			}
			if err := e.finish(ctx, tx, ws.Machine, wf.Metadata.Name, st, TimedOut, reason); err != nil {
				return err
			}
			if err := saveStatus(ctx, tx, wf, st); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// RecordFacts stores what the agent reported about its hardware in the machine's
// status. Facts feed policy and display; they never grant anything by themselves.
func (e *Engine) RecordFacts(ctx context.Context, machine string, facts map[string]any) error {
	return e.Store.Update(ctx, func(tx store.Tx) error {
		m, err := tx.Get(ctx, "Machine", machine)
		if err != nil {
			return err
		}
		var ms map[string]any
		if len(m.Status) > 0 {
			_ = json.Unmarshal(m.Status, &ms)
		}
		if ms == nil {
			ms = map[string]any{}
		}
		ms["facts"] = facts
		ms["lastSeen"] = e.now()
		b, err := json.Marshal(ms)
		if err != nil {
			return err
		}
		m.Status = b
		if err := tx.Update(ctx, m); err != nil {
			return err
		}
		return tx.AddEvent(ctx, &store.Event{Machine: machine, Time: e.now(), Type: "FactsReported", Message: factsSummary(facts)})
	})
}

func factsSummary(f map[string]any) string {
	var parts []string
	for _, k := range []string{"cpus", "memory_mb"} {
		if v, ok := f[k]; ok {
			// The agent chooses these values: capped and escaped like any remote text.
			parts = append(parts, k+"="+safetext.Field(fmt.Sprint(v), 32))
		}
	}
	if d, ok := f["disks"].([]any); ok {
		parts = append(parts, fmt.Sprintf("disks=%d", len(d)))
	}
	if n, ok := f["nics"].([]any); ok {
		parts = append(parts, fmt.Sprintf("nics=%d", len(n)))
	}
	if len(parts) == 0 {
		return "facts reported"
	}
	return strings.Join(parts, " ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
