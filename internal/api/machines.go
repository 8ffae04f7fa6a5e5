package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/workflow"
)

// ReprovisionRequest starts a workflow on a machine.
type ReprovisionRequest struct {
	// Template overrides the profile's workflow template.
	Template string `json:"template,omitempty"`
	// NoPower leaves the machine's power alone (the operator reboots it).
	NoPower bool `json:"noPower,omitempty"`
}

// WorkflowView is a machine's newest workflow.
type WorkflowView struct {
	Name   string           `json:"name"`
	Status *workflow.Status `json:"status"`
	// PowerJob is the job that sets next boot to PXE and power-cycles the machine.
	PowerJob string `json:"powerJob,omitempty"`
	// Warnings are what will keep the workflow from running (a reprovision's answer).
	Warnings []string `json:"warnings,omitempty"`
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
	view := WorkflowView{Name: wf.Metadata.Name, Status: st, Warnings: s.machineWarnings(r.Context(), r.PathValue("name"), req.Template)}
	if s.PowerReprovision != nil && !req.NoPower {
		job, err := s.PowerReprovision(r.Context(), actor(r).ID, r.PathValue("name"))
		if err != nil {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("workflow %s started, but the power cycle could not be requested: %v", wf.Metadata.Name, err))
			return
		}
		view.PowerJob = job
	}
	s.Logger.Info("reprovision", "machine", r.PathValue("name"), "workflow", wf.Metadata.Name, "power_job", view.PowerJob, "actor", actor(r).ID)
	writeJSON(w, http.StatusCreated, view)
}

// UpgradeRequest writes a dm-verity image to a machine's inactive A/B slot.
type UpgradeRequest struct {
	// Image is the Artifact (with spec.verity) to write.
	Image string `json:"image"`
	// Template overrides the profile's workflow template, whose image2slot and
	// reboot actions the upgrade runs.
	Template string `json:"template,omitempty"`
	// NoPower leaves the machine's power alone (the operator reboots it).
	NoPower bool `json:"noPower,omitempty"`
}

// upgrade starts a workflow that writes req.Image to the slot the machine is not
// running and reboots it into that slot; like a reprovision, the machine netboots
// Kiln's agent to run it (the installed system runs no Kiln agent).
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) {
	if s.Workflows == nil {
		writeError(w, http.StatusNotImplemented, "workflows are not enabled on this server")
		return
	}
	var req UpgradeRequest
	if !s.decodeStrict(w, r, &req) {
		return
	}
	if req.Image == "" {
		writeError(w, http.StatusUnprocessableEntity, "image: required (an Artifact with spec.verity)")
		return
	}
	name := r.PathValue("name")
	wf, err := s.Workflows.Upgrade(r.Context(), actor(r).ID, name, req.Image, req.Template)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	st, _ := workflow.StatusOf(wf)
	view := WorkflowView{Name: wf.Metadata.Name, Status: st, Warnings: s.machineWarnings(r.Context(), name, req.Template)}
	if s.PowerReprovision != nil && !req.NoPower {
		job, err := s.PowerReprovision(r.Context(), actor(r).ID, name)
		if err != nil {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("workflow %s started, but the power cycle could not be requested: %v", wf.Metadata.Name, err))
			return
		}
		view.PowerJob = job
	}
	s.Logger.Info("upgrade", "machine", name, "image", req.Image, "workflow", wf.Metadata.Name, "power_job", view.PowerJob, "actor", actor(r).ID)
	writeJSON(w, http.StatusCreated, view)
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

// CancelResponse names the cancelled workflow and the machine's state now.
type CancelResponse struct {
	Workflow string `json:"workflow"`
	State    string `json:"state"`
}

func (s *Server) cancelWorkflow(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	wf, state, err := s.Inventory.CancelWorkflow(r.Context(), actor(r), name)
	if err != nil {
		if errors.Is(err, inventory.ErrNothingToCancel) {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("machine %q not found", name))
			return
		}
		s.fail(w, r, err)
		return
	}
	s.Logger.Info("workflow cancelled", "machine", name, "workflow", wf, "state", state, "actor", actor(r).ID)
	writeJSON(w, http.StatusOK, CancelResponse{Workflow: wf, State: state})
}
