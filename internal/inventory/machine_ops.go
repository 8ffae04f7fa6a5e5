package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/workflow"
)

// MachineLabel labels a workflow with its machine (set by the workflow engine).
const MachineLabel = "kiln.dev/machine"

// CancelledMessage starts the message of a workflow an operator cancelled. Its state
// is failed (the agent knows no other end), and the CLI shows it as cancelled.
const CancelledMessage = "cancelled by "

// ErrNothingToCancel: the machine has no workflow that has not finished.
var ErrNothingToCancel = errors.New("no pending or running workflow")

// CancelWorkflow ends the machine's unfinished workflow and puts the machine back in
// the state it had before that workflow: provisioned after a workflow that succeeded,
// failed after one that failed, new if none finished. One transaction, audited.
// It returns the cancelled workflow and the machine's state now.
func (s *Service) CancelWorkflow(ctx context.Context, actor Actor, machine string) (wfName, state string, err error) {
	err = s.Store.Update(ctx, func(tx store.Tx) error {
		m, err := tx.Get(ctx, "Machine", machine)
		if err != nil {
			return objectErr(&resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: machine}}, "cancel workflow of", err)
		}
		wfs, err := machineWorkflows(ctx, tx, machine)
		if err != nil {
			return err
		}
		var cur *resource.Object
		var curSt *workflow.Status
		state = resource.StateNew
		for _, wf := range wfs { // oldest first
			st, err := workflow.StatusOf(wf)
			if err != nil {
				continue
			}
			switch {
			case !workflow.Final(st.State):
				cur, curSt = wf, st
			case strings.HasPrefix(st.Message, "superseded") || strings.HasPrefix(st.Message, CancelledMessage):
				// ended by an operator, not by how the machine fared
			case st.State == workflow.Succeeded:
				state = resource.StateProvisioned
			default:
				state = resource.StateFailed
			}
		}
		if cur == nil {
			return fmt.Errorf("machine %q: %w to cancel", machine, ErrNothingToCancel)
		}
		now := s.now()
		curSt.State, curSt.FinishedAt, curSt.Message = workflow.Failed, &now, CancelledMessage+actor.ID
		b, err := json.Marshal(curSt)
		if err != nil {
			return err
		}
		cur.Status = b
		if err := tx.Update(ctx, cur); err != nil {
			return fmt.Errorf("cancel workflow %q: %w", cur.Metadata.Name, err)
		}
		var ms map[string]any
		_ = json.Unmarshal(m.Status, &ms)
		if ms == nil {
			ms = map[string]any{}
		}
		prev, _ := ms["state"].(string)
		ms["state"] = state
		m.Status, _ = json.Marshal(ms)
		if err := tx.Update(ctx, m); err != nil {
			return fmt.Errorf("cancel workflow of machine %q: %w", machine, err)
		}
		wfName = cur.Metadata.Name
		summary := fmt.Sprintf("cancelled workflow %s; state %s -> %s", wfName, prev, state)
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: actor.ID, Action: "cancel", Kind: "Machine", Name: machine, Summary: summary}); err != nil {
			return err
		}
		return tx.AddEvent(ctx, &store.Event{Machine: machine, Time: now, Type: "WorkflowCancelled", Message: summary + " by " + actor.ID})
	})
	return wfName, state, err
}

// DeleteCascade deletes an object and, for a machine, its workflows first, in one
// transaction; every deletion is audited. Objects of other kinds have nothing to
// cascade to: it is Delete.
func (s *Service) DeleteCascade(ctx context.Context, actor Actor, kind, name, resourceVersion string) error {
	return s.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.Get(ctx, kind, name)
		if err != nil {
			return objectErr(&resource.Object{Kind: kind, Metadata: resource.Metadata{Name: name}}, "delete", err)
		}
		if kind == "Machine" {
			wfs, err := machineWorkflows(ctx, tx, name)
			if err != nil {
				return err
			}
			for _, wf := range wfs {
				if err := tx.Delete(ctx, "Workflow", wf.Metadata.Name, ""); err != nil {
					return objectErr(wf, "delete", err)
				}
				if err := s.record(ctx, tx, actor, "delete", nil, wf); err != nil {
					return err
				}
			}
		}
		if err := checkNotReferenced(ctx, tx, cur); err != nil {
			return err
		}
		if err := tx.Delete(ctx, kind, name, resourceVersion); err != nil {
			return objectErr(cur, "delete", err)
		}
		return s.record(ctx, tx, actor, "delete", nil, cur)
	})
}

// machineWorkflows lists a machine's workflows, oldest first.
func machineWorkflows(ctx context.Context, tx store.Tx, machine string) ([]*resource.Object, error) {
	sel, err := resource.ParseSelector(MachineLabel + "=" + machine)
	if err != nil {
		return nil, fmt.Errorf("workflows of machine %q: %w", machine, err)
	}
	var out []*resource.Object
	cont := ""
	for {
		wfs, next, err := tx.List(ctx, "Workflow", store.ListOptions{Selector: sel, Limit: 1000, Continue: cont})
		if err != nil {
			return nil, fmt.Errorf("workflows of machine %q: %w", machine, err)
		}
		out = append(out, wfs...)
		if next == "" {
			return out, nil
		}
		cont = next
	}
}
