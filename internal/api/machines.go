package api

import (
	"errors"
	"net/http"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/workflow"
)

// ReprovisionRequest starts a workflow on a machine.
type ReprovisionRequest struct {
	// Template overrides the profile's workflow template.
	Template string `json:"template,omitempty"`
}

// WorkflowView is a machine's newest workflow.
type WorkflowView struct {
	Name   string           `json:"name"`
	Status *workflow.Status `json:"status"`
}

func (s *Server) reprovision(w http.ResponseWriter, r *http.Request) {
	if s.Workflows == nil {
		writeError(w, http.StatusNotImplemented, "workflows are not enabled on this server")
		return
	}
	var req ReprovisionRequest
	if !s.decodeStrict(w, r, &req) {
		return
	}
	wf, err := s.Workflows.Start(r.Context(), actor(r).ID, r.PathValue("name"), req.Template)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	st, _ := workflow.StatusOf(wf)
	s.Logger.Info("reprovision", "machine", r.PathValue("name"), "workflow", wf.Metadata.Name, "actor", actor(r).ID)
	writeJSON(w, http.StatusCreated, WorkflowView{Name: wf.Metadata.Name, Status: st})
}

func (s *Server) machineWorkflow(w http.ResponseWriter, r *http.Request) {
	var out WorkflowView
	err := s.Store.View(r.Context(), func(tx store.Tx) error {
		wf, st, err := workflow.Latest(r.Context(), tx, r.PathValue("name"))
		if err != nil {
			return err
		}
		out = WorkflowView{Name: wf.Metadata.Name, Status: st}
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
