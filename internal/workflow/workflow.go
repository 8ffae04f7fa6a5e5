// Package workflow runs provisioning workflows: a Template's ordered actions rendered
// for one machine, executed by the agent on that machine and driven by its reports.
// The state is persisted in the Workflow object's status, so a restart of Kiln (or of
// the agent) resumes where it was and finished actions are never redone. Reports are
// accepted only from the machine's own certificate, after it fetched its workflow,
// and only for the action the workflow waits for, so that a machine certificate alone
// cannot report a machine provisioned (report.go).
//
//	workflow: pending -> running -> succeeded | failed | timed-out
//	action:   pending -> running -> succeeded | failed | timed-out
//	machine:  provisioning -> provisioned (success) | failed
package workflow

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/template"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// States of workflows and actions: the agent reads them, so agentwire defines them.
const (
	Pending   = agentwire.Pending
	Running   = agentwire.Running
	Succeeded = agentwire.Succeeded
	Failed    = agentwire.Failed
	TimedOut  = agentwire.TimedOut
)

// Final reports whether a state is terminal.
func Final(s string) bool { return agentwire.Final(s) }

// DefaultWorkflowTimeout applies when a template sets none.
const DefaultWorkflowTimeout = 2 * time.Hour

// DefaultActionTimeout applies when an action sets none.
const DefaultActionTimeout = agentwire.DefaultActionTimeout

// MaxLogLines is how many of an action's last log lines the status keeps.
const MaxLogLines = 20

// A workflow's status is what the agent reads of it: the types are agentwire's.
type (
	Progress     = agentwire.Progress
	ActionStatus = agentwire.ActionStatus
	// Status is a Workflow object's status.
	Status = agentwire.WorkflowStatus
)

// Engine creates workflows and applies agent reports.
type Engine struct {
	Store store.Store
	// ArtifactURL returns the URL an agent downloads an artifact from.
	ArtifactURL func(name string) string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now().UTC()
	}
	return time.Now().UTC()
}

// ErrBadReport: an agent report that does not fit the workflow's state.
var ErrBadReport = errors.New("report does not fit the workflow")

// RenderData is what action arguments see as Go templates.
type RenderData struct {
	Machine RenderMachine
	Profile string
	// Artifacts maps artifact names to their download URL and sha256.
	Artifacts map[string]RenderArtifact
	// Slot is the A/B slot an image2slot action writes: the one not running.
	Slot string
}

// RenderMachine is the machine part of RenderData.
type RenderMachine struct {
	Name     string
	Labels   map[string]string
	MAC      string
	IP       string
	Hostname string
}

// RenderArtifact is an artifact as an action sees it.
type RenderArtifact struct {
	URL    string
	SHA256 string
	Size   int64
	// Verity is a dm-verity image's hash tree, root hash and signature.
	Verity *resource.ArtifactVerity
}

// Start creates a new workflow for a machine from a template, renders its actions,
// and puts the machine in state provisioning, in one transaction. Any running
// workflow of the machine is cancelled (marked failed: superseded).
func (e *Engine) Start(ctx context.Context, actor, machine, templateName string) (*resource.Object, error) {
	return e.start(ctx, actor, machine, templateName, nil, "reprovision")
}

// start is Start; transform, if set, derives the actions to run from the template's
// (an upgrade runs only some of them), and auditAction names the audit entry.
func (e *Engine) start(ctx context.Context, actor, machine, templateName string,
	transform func(store.Tx, *resource.TemplateSpec) (*resource.TemplateSpec, error), auditAction string) (*resource.Object, error) {
	var out *resource.Object
	err := e.Store.Update(ctx, func(tx store.Tx) error {
		m, err := tx.Get(ctx, "Machine", machine)
		if err != nil {
			return fmt.Errorf("machine %q: %w", machine, err)
		}
		ms, err := resource.Typed[resource.MachineSpec](m)
		if err != nil {
			return err
		}
		if templateName == "" {
			if ms.Profile == "" {
				return fmt.Errorf("machine %q has no profile and no --template was given", machine)
			}
			p, err := tx.Get(ctx, "Profile", ms.Profile)
			if err != nil {
				return fmt.Errorf("profile %q: %w", ms.Profile, err)
			}
			ps, err := resource.Typed[resource.ProfileSpec](p)
			if err != nil {
				return err
			}
			if ps.Workflow == "" {
				return fmt.Errorf("profile %q names no workflow template and no --template was given", ms.Profile)
			}
			templateName = ps.Workflow
		}
		t, err := tx.Get(ctx, "Template", templateName)
		if err != nil {
			return fmt.Errorf("template %q: %w", templateName, err)
		}
		ts, err := resource.Typed[resource.TemplateSpec](t)
		if err != nil {
			return err
		}
		if transform != nil {
			if ts, err = transform(tx, ts); err != nil {
				return fmt.Errorf("template %q: %w", templateName, err)
			}
		}
		data, err := e.renderData(ctx, tx, m, ms, ts)
		if err != nil {
			return err
		}
		st, err := Render(templateName, ts, data, e.now())
		if err != nil {
			return err
		}
		if err := e.supersede(ctx, tx, actor, machine); err != nil {
			return err
		}
		name := fmt.Sprintf("%s-%s", machine, e.now().Format("20060102-150405.000"))
		name = strings.ReplaceAll(name, ".", "-")
		spec, _ := json.Marshal(resource.WorkflowSpec{Machine: machine, Template: templateName})
		status, _ := json.Marshal(st)
		wf := &resource.Object{APIVersion: resource.APIVersion, Kind: "Workflow",
			Metadata: resource.Metadata{Name: name, Labels: map[string]string{"kiln.dev/machine": machine}}, Spec: spec, Status: status}
		if err := tx.Create(ctx, wf); err != nil {
			return fmt.Errorf("create workflow: %w", err)
		}
		if err := setMachineState(ctx, tx, m, resource.StateProvisioning); err != nil {
			return err
		}
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: e.now(), Actor: actor, Action: auditAction, Kind: "Machine", Name: machine,
			Summary: fmt.Sprintf("started workflow %s from template %s; state provisioning", name, templateName)}); err != nil {
			return err
		}
		out = wf
		return tx.AddEvent(ctx, &store.Event{Machine: machine, Time: e.now(), Type: "WorkflowCreated",
			Message: fmt.Sprintf("workflow %s (template %s, %d actions) by %s", name, templateName, len(st.Actions), actor)})
	})
	return out, err
}

// supersede fails the machine's unfinished workflows: one machine runs one workflow.
func (e *Engine) supersede(ctx context.Context, tx store.Tx, actor, machine string) error {
	sel, _ := resource.ParseSelector("kiln.dev/machine=" + machine)
	wfs, _, err := tx.List(ctx, "Workflow", store.ListOptions{Selector: sel})
	if err != nil {
		return err
	}
	for _, wf := range wfs {
		st, err := StatusOf(wf)
		if err != nil || Final(st.State) {
			continue
		}
		now := e.now()
		st.State, st.FinishedAt, st.Message = Failed, &now, "superseded by a new workflow"
		if err := saveStatus(ctx, tx, wf, st); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) renderData(ctx context.Context, tx store.Tx, m *resource.Object, ms *resource.MachineSpec, ts *resource.TemplateSpec) (RenderData, error) {
	d := RenderData{Machine: RenderMachine{Name: m.Metadata.Name, Labels: m.Metadata.Labels}, Profile: ms.Profile, Artifacts: map[string]RenderArtifact{}}
	if len(ms.Interfaces) > 0 {
		i := ms.Interfaces[0]
		d.Machine.MAC, d.Machine.IP, d.Machine.Hostname = i.MAC, i.IP, i.Hostname
	}
	d.Machine.Hostname = cmp.Or(d.Machine.Hostname, m.Metadata.Name)
	mst, err := machineStatus(m)
	if err != nil {
		return d, err
	}
	d.Slot = nextSlot(mst)
	// Every artifact an action names (args.image, args.artifact, and a verity image's
	// hash tree) is resolved here, so the agent gets a URL and the sha256 to check
	// while it writes.
	for _, a := range ts.Actions {
		names := []struct{ key, name string }{}
		for _, key := range []string{"image", "artifact"} {
			if name, ok := a.Args[key].(string); ok {
				names = append(names, struct{ key, name string }{key, name})
			}
		}
		for i := 0; i < len(names); i++ {
			key, name := names[i].key, names[i].name
			if name == "" || strings.Contains(name, "{{") || strings.Contains(name, "://") {
				continue
			}
			if _, done := d.Artifacts[name]; done {
				continue
			}
			art, err := tx.Get(ctx, "Artifact", name)
			if err != nil {
				return d, fmt.Errorf("action %q: args.%s: artifact %q: %w", a.Name, key, name, err)
			}
			as, err := resource.Typed[resource.ArtifactSpec](art)
			if err != nil {
				return d, err
			}
			sum := as.SHA256
			if sum == "" {
				var st struct {
					SHA256 string `json:"sha256"`
				}
				_ = json.Unmarshal(art.Status, &st)
				sum = st.SHA256
			}
			url := as.Source
			remote := strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "https://")
			// A signed artifact goes through Kiln even from a remote source: Kiln
			// verifies its signature before serving it, the source would not.
			if (!remote || as.Signature != "") && e.ArtifactURL != nil {
				url = e.ArtifactURL(name)
			}
			d.Artifacts[name] = RenderArtifact{URL: url, SHA256: sum, Size: as.Size, Verity: as.Verity}
			if as.Verity != nil && a.Type == "image2slot" {
				names = append(names, struct{ key, name string }{key + ".verity.hashTree", as.Verity.HashTree})
			}
		}
	}
	return d, nil
}

// Render turns a template into a workflow status with every action's arguments
// rendered. An argument that does not render is an error naming the action and field.
func Render(templateName string, ts *resource.TemplateSpec, data RenderData, now time.Time) (*Status, error) {
	st := &Status{State: Pending, Timeout: cmp.Or(ts.Timeout, DefaultWorkflowTimeout.String()), CreatedAt: now}
	for i, a := range ts.Actions {
		path := fmt.Sprintf("template %q: spec.actions[%d] (%s)", templateName, i, a.Name)
		args, err := renderValue(path+".args", a.Args, data)
		if err != nil {
			return nil, err
		}
		am, _ := args.(map[string]any)
		// image / artifact names become what the agent needs to fetch and verify.
		for _, key := range []string{"image", "artifact"} {
			if name, ok := am[key].(string); ok {
				if art, ok := data.Artifacts[name]; ok {
					am[key+"URL"] = art.URL
					if art.SHA256 != "" {
						if _, set := am["sha256"]; !set {
							am["sha256"] = art.SHA256
						}
					}
				}
			}
		}
		if a.Type == "image2slot" {
			renderSlotArgs(am, data)
		}
		st.Actions = append(st.Actions, ActionStatus{Name: a.Name, Type: a.Type, Timeout: cmp.Or(a.Timeout, DefaultActionTimeout.String()), Retries: a.Retries, Args: am, State: Pending})
	}
	return st, nil
}

func renderValue(path string, v any, data RenderData) (any, error) {
	switch x := v.(type) {
	case string:
		if !strings.Contains(x, "{{") {
			return x, nil
		}
		t, err := template.New(path).Option("missingkey=error").Parse(x)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		return b.String(), nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			r, err := renderValue(path+"."+k, e, data)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			r, err := renderValue(fmt.Sprintf("%s[%d]", path, i), e, data)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	}
	return v, nil
}

// StatusOf decodes a Workflow object's status.
func StatusOf(wf *resource.Object) (*Status, error) {
	var st Status
	if len(wf.Status) == 0 {
		return nil, fmt.Errorf("workflow %q has no status", wf.Metadata.Name)
	}
	if err := json.Unmarshal(wf.Status, &st); err != nil {
		return nil, fmt.Errorf("workflow %q: status: %w", wf.Metadata.Name, err)
	}
	return &st, nil
}

func saveStatus(ctx context.Context, tx store.Tx, wf *resource.Object, st *Status) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	wf.Status = b
	return tx.Update(ctx, wf)
}

func setMachineState(ctx context.Context, tx store.Tx, m *resource.Object, state string) error {
	var ms map[string]any
	if len(m.Status) > 0 {
		_ = json.Unmarshal(m.Status, &ms)
	}
	if ms == nil {
		ms = map[string]any{}
	}
	ms["state"] = state
	b, _ := json.Marshal(ms)
	m.Status = b
	return tx.Update(ctx, m)
}

// Current returns the machine's newest workflow that has not finished, or
// store.ErrNotFound.
func Current(ctx context.Context, tx store.Tx, machine string) (*resource.Object, *Status, error) {
	sel, _ := resource.ParseSelector("kiln.dev/machine=" + machine)
	wfs, _, err := tx.List(ctx, "Workflow", store.ListOptions{Selector: sel})
	if err != nil {
		return nil, nil, err
	}
	// Names carry a sortable timestamp: the last is the newest.
	for i := len(wfs) - 1; i >= 0; i-- {
		st, err := StatusOf(wfs[i])
		if err != nil {
			continue
		}
		if !Final(st.State) {
			return wfs[i], st, nil
		}
	}
	return nil, nil, store.ErrNotFound
}

// Latest returns the machine's newest workflow in any state, or store.ErrNotFound.
func Latest(ctx context.Context, tx store.Tx, machine string) (*resource.Object, *Status, error) {
	sel, _ := resource.ParseSelector("kiln.dev/machine=" + machine)
	wfs, _, err := tx.List(ctx, "Workflow", store.ListOptions{Selector: sel})
	if err != nil {
		return nil, nil, err
	}
	if len(wfs) == 0 {
		return nil, nil, store.ErrNotFound
	}
	wf := wfs[len(wfs)-1]
	st, err := StatusOf(wf)
	return wf, st, err
}
