package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/httpjson"
	"github.com/kilnhq/kiln/internal/store"
)

// Identity maps a request to the machine that made it (from its verified client
// certificate); ok is false when the request carries no machine identity.
type Identity func(r *http.Request) (machine string, ok bool)

// AgentAPI serves the agent's calls. Every route requires a machine identity, and a
// machine only ever sees and changes its own workflow.
type AgentAPI struct {
	Engine   *Engine
	Identity Identity
	Logger   *slog.Logger
}

// maxReportBytes bounds an agent report or facts body.
const maxReportBytes = 1 << 20

// Register adds the agent routes to mux.
func (a *AgentAPI) Register(mux *http.ServeMux) {
	if a.Logger == nil {
		a.Logger = slog.New(slog.DiscardHandler)
	}
	mux.HandleFunc("GET "+agentwire.WorkflowPath, a.withMachine(a.current))
	mux.HandleFunc("POST "+agentwire.ActionReportPattern, a.withMachine(a.report))
	mux.HandleFunc("POST "+agentwire.FactsPath, a.withMachine(a.facts))
}

// WorkflowResponse is the agent's view of its current workflow.
type WorkflowResponse = agentwire.WorkflowResponse

func (a *AgentAPI) withMachine(h func(w http.ResponseWriter, r *http.Request, machine string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		m, ok := a.Identity(r)
		if !ok {
			jsonError(w, http.StatusUnauthorized, "a machine certificate is required")
			return
		}
		h(w, r, m)
	}
}

func (a *AgentAPI) current(w http.ResponseWriter, r *http.Request, machine string) {
	resp, err := a.Engine.Fetch(r.Context(), machine)
	if errors.Is(err, store.ErrNotFound) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err != nil {
		a.Logger.Error("agent workflow", "machine", machine, "err", err)
		jsonError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *AgentAPI) report(w http.ResponseWriter, r *http.Request, machine string) {
	var rep Report
	if err := decodeBody(w, r, &rep); err != nil {
		return
	}
	st, err := a.Engine.Apply(r.Context(), machine, r.PathValue("workflow"), r.PathValue("action"), rep)
	switch {
	case errors.Is(err, store.ErrNotFound):
		jsonError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrBadReport):
		a.Logger.Warn("agent report refused", "machine", machine, "workflow", r.PathValue("workflow"), "action", r.PathValue("action"), "err", err)
		jsonError(w, http.StatusConflict, err.Error())
	case err != nil:
		a.Logger.Error("agent report", "machine", machine, "workflow", r.PathValue("workflow"), "err", err)
		jsonError(w, http.StatusServiceUnavailable, "cannot record the report")
	default:
		a.Logger.Info("agent report", "machine", machine, "workflow", r.PathValue("workflow"), "action", r.PathValue("action"), "state", rep.State)
		writeJSON(w, http.StatusOK, WorkflowResponse{Name: r.PathValue("workflow"), Status: st})
	}
}

func (a *AgentAPI) facts(w http.ResponseWriter, r *http.Request, machine string) {
	var f map[string]any
	if err := decodeBody(w, r, &f); err != nil {
		return
	}
	if err := a.Engine.RecordFacts(r.Context(), machine, f); err != nil {
		a.Logger.Error("agent facts", "machine", machine, "err", err)
		jsonError(w, http.StatusServiceUnavailable, "cannot record facts")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReportBytes))
	if err != nil {
		jsonError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxReportBytes))
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		jsonError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return err
	}
	return nil
}

var (
	writeJSON = httpjson.Write
	jsonError = httpjson.Error
)
