package agentwire

import "time"

// States of workflows and actions.
//
//	workflow: pending -> running -> succeeded | failed | timed-out
//	action:   pending -> running -> succeeded | failed | timed-out
const (
	Pending   = "pending"
	Running   = "running"
	Succeeded = "succeeded"
	Failed    = "failed"
	TimedOut  = "timed-out"
)

// Final reports whether a state is terminal.
func Final(s string) bool { return s == Succeeded || s == Failed || s == TimedOut }

// DefaultActionTimeout applies when an action sets none.
const DefaultActionTimeout = 30 * time.Minute

// Progress of a long action (image2disk).
type Progress struct {
	Bytes   int64   `json:"bytes"`
	Total   int64   `json:"total,omitempty"`
	Percent float64 `json:"percent,omitempty"`
}

// ActionStatus is one action's rendered form and state.
type ActionStatus struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Timeout    string         `json:"timeout"`
	Retries    int            `json:"retries,omitempty"`
	Args       map[string]any `json:"args,omitempty"`
	State      string         `json:"state"`
	Attempts   int            `json:"attempts,omitempty"`
	StartedAt  *time.Time     `json:"startedAt,omitempty"`
	FinishedAt *time.Time     `json:"finishedAt,omitempty"`
	Progress   *Progress      `json:"progress,omitempty"`
	Message    string         `json:"message,omitempty"`
	Log        []string       `json:"log,omitempty"`
}

// WorkflowStatus is a workflow's state and its actions' (a Workflow object's status).
type WorkflowStatus struct {
	State      string     `json:"state"`
	Current    string     `json:"currentAction,omitempty"`
	Timeout    string     `json:"timeout"`
	CreatedAt  time.Time  `json:"createdAt"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	Message    string     `json:"message,omitempty"`
	// FetchedAt is when the machine last fetched the workflow (GET WorkflowPath): the
	// server accepts reports only once it has.
	FetchedAt *time.Time     `json:"fetchedAt,omitempty"`
	Actions   []ActionStatus `json:"actions"`
}

// WorkflowResponse is the agent's view of its current workflow: the answer to GET
// WorkflowPath and to a report.
type WorkflowResponse struct {
	Name   string          `json:"name"`
	Status *WorkflowStatus `json:"status"`
}

// Report is what the agent says about one action (POST ActionReportPath).
type Report struct {
	State    string    `json:"state"` // running, succeeded, failed
	Attempt  int       `json:"attempt,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
	Message  string    `json:"message,omitempty"`
	Log      []string  `json:"log,omitempty"`
}
