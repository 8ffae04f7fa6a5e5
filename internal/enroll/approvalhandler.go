package enroll

import (
	"errors"
	"io"
	"net/http"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/inventory"
)

// POST /enroll/requests/{id}: the requester of a pending enrollment polls it
// (approval.go), proving on each poll, on the poll's connection, that it holds the
// request's key.

func (s *Server) handlePoll(w http.ResponseWriter, r *http.Request) {
	remote := remoteAddr(r)
	id := r.PathValue("id")
	// Every refusal names the request: the handler's own here, collect's where they
	// are made.
	fail := func(ref *Refusal) {
		s.RecordRefusal(r.Context(), "enroll-poll", ref, remote.String())
		writeError(w, ref.Status, ref.Reason)
	}
	pollRefusal := func(status int, format string, a ...any) *Refusal {
		return refuse(status, "enrollment request %s: "+format, append([]any{truncate(id, 64)}, a...)...)
	}
	if r.TLS == nil {
		fail(pollRefusal(http.StatusForbidden, "enrollment is HTTPS only: use Kiln's https:// URL"))
		return
	}
	var req agentwire.EnrollPollRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, min(s.cfg.MaxBodyBytes, 2*MaxCSRBytes)))
	if err == nil {
		err = strictJSON(body, &req)
	}
	if err != nil {
		fail(pollRefusal(http.StatusBadRequest, "poll: %v", err))
		return
	}
	e := &enrollment{remote: remote, now: s.now()}
	if cb, err := r.TLS.ExportKeyingMaterial(ChannelBindingLabel, nil, channelBindingBytes); err == nil {
		e.channel = cb
	}
	if e.csr, err = parseCSR(req.CSR); err != nil {
		fail(pollRefusal(http.StatusBadRequest, "poll: %v", err))
		return
	}
	// The proof must be bound to this connection: a CSR without a binding could be a
	// copy of the one the request was made with.
	if e.csr.channel == nil {
		fail(pollRefusal(http.StatusBadRequest, "poll: the CSR carries no TLS channel binding: a poll must prove the key on its own connection"))
		return
	}
	if err := e.checkChannel(); err != nil {
		fail(pollRefusal(http.StatusBadRequest, "poll: %v", err))
		return
	}
	resp, err := s.collect(r.Context(), id, e)
	if err != nil {
		var ref *Refusal
		if errors.As(err, &ref) {
			fail(ref)
			return
		}
		s.log().Error("enrollment poll", "enrollment", truncate(id, 64), "remote", remote, "err", err)
		writeError(w, http.StatusServiceUnavailable, "enrollment failed on the server (store unavailable); retry later")
		return
	}
	if resp.pending != nil {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusAccepted, resp.pending)
		return
	}
	resp.channelBound = true
	resp.BoundConnection = bindConnection(r, resp)
	s.log().Info("enrolled", "machine", resp.Machine, "serial", resp.Serial, "remote", remote, "enrollment", id, "bound_connection", resp.BoundConnection)
	writeJSON(w, http.StatusOK, resp)
}

// ApproveRequest is the body of POST /api/v1/enrollments/{id}/approve.
type ApproveRequest struct {
	// Machine, if set, is the machine the request enrolls as (see ApproveEnrollment).
	Machine string `json:"machine,omitempty"`
}

// DenyRequest is the body of POST /api/v1/enrollments/{id}/deny.
type DenyRequest struct {
	Reason string `json:"reason,omitempty"`
}

func (s *Server) opApproveEnrollment(w http.ResponseWriter, r *http.Request) {
	var req ApproveRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	obj, err := s.ApproveEnrollmentAs(r.Context(), inventory.Actor{ID: s.actor(r), Role: s.role(r)}, r.PathValue("id"), req.Machine)
	if err != nil {
		s.opFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

func (s *Server) opDenyEnrollment(w http.ResponseWriter, r *http.Request) {
	var req DenyRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	obj, err := s.DenyEnrollment(r.Context(), s.actor(r), r.PathValue("id"), req.Reason)
	if err != nil {
		s.opFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, obj)
}
