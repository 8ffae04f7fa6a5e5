package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
)

// Roles of the operator routes (the names of store.Role*).
const (
	roleViewer   = store.RoleViewer
	roleOperator = store.RoleOperator
	roleAdmin    = store.RoleAdmin
)

// OperatorRoute is one operator API route this package serves.
type OperatorRoute struct {
	Method, Path, Role, Summary string
	Handler                     http.HandlerFunc
}

// OperatorRoutes lists the operator API routes. The API adds them to its table, behind
// its bearer-token authentication, with the role given; ActorOf must be set so that
// audit entries name the operator.
func (s *Server) OperatorRoutes() []OperatorRoute {
	return []OperatorRoute{
		{"POST", "/api/v1/enroll/jointokens", roleOperator, "Create a join token; the token is in the response only", s.opCreateToken},
		{"GET", "/api/v1/enroll/jointokens", roleViewer, "List join tokens (scope, uses; never the tokens); boot=true includes per-boot tokens", s.opListTokens},
		{"POST", "/api/v1/enroll/jointokens/{id}/revoke", roleOperator, "Revoke a join token", s.opRevokeToken},
		{"POST", "/api/v1/enroll/machines/{name}/revoke", roleOperator, "Revoke a machine's certificates (agent API refuses them at once; listed in /crl)", s.opRevokeMachine},
		{"POST", "/api/v1/enroll/machines/{name}/bootcert", roleAdmin, "Issue a client certificate and key for a machine's iPXE build; the key is in the response only", s.opBootCert},
		{"GET", "/api/v1/enroll/ca", roleViewer, "The CA certificate and its SHA-256 fingerprint", s.opCA},
		{"POST", "/api/v1/enrollments/{id}/approve", roleOperator, "Approve a pending enrollment request (machine: enroll it as this machine); the requester collects its certificate when it next polls", s.opApproveEnrollment},
		{"POST", "/api/v1/enrollments/{id}/deny", roleOperator, "Deny a pending enrollment request (reason: told to the requester)", s.opDenyEnrollment},
		// Admin: a baseline decides which booted software attested machines (and so
		// the secrets released with attested: true) may run.
		{"POST", "/api/v1/attestation/accept", roleAdmin, "Accept a measured-boot baseline: machine (its last quoted boot becomes its profile's) or profile (learn from its next attested boot)", s.opAcceptAttestation},
	}
}

// RegisterOperator hands each operator route to register (the API's route table).
func (s *Server) RegisterOperator(register func(method, path, role, summary string, h http.HandlerFunc)) {
	for _, rt := range s.OperatorRoutes() {
		register(rt.Method, rt.Path, rt.Role, rt.Summary, rt.Handler)
	}
}

func (s *Server) actor(r *http.Request) string {
	if s.ActorOf != nil {
		if a := s.ActorOf(r); a != "" {
			return a
		}
	}
	return "operator"
}

// role is the operator's role; without RoleOf every caller counts as an operator,
// so that a wiring mistake refuses rather than releases.
func (s *Server) role(r *http.Request) string {
	if s.RoleOf != nil {
		if role := s.RoleOf(r); role != "" {
			return role
		}
	}
	return roleOperator
}

func (s *Server) opFail(w http.ResponseWriter, r *http.Request, err error) {
	code := statusForError(err)
	msg := err.Error()
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code, msg = http.StatusServiceUnavailable, "request cancelled or timed out"
	case code == http.StatusInternalServerError:
		s.log().Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error (see the server log)"
	}
	writeError(w, code, msg)
}

// statusForError maps service errors to HTTP statuses for the operator handlers.
func statusForError(err error) int {
	var ie *InvalidError
	var ref *Refusal
	var fe *inventory.ForbiddenError
	switch {
	case errors.As(err, &fe):
		return http.StatusForbidden
	case errors.As(err, &ref):
		return ref.Status
	case errors.As(err, &ie):
		return http.StatusUnprocessableEntity
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrConflict):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", s.cfg.MaxBodyBytes))
		return false
	}
	if len(body) == 0 {
		return true
	}
	if err := strictJSON(body, v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return false
	}
	return true
}

func (s *Server) opCreateToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	out, err := s.CreateTokenAs(r.Context(), inventory.Actor{ID: s.actor(r), Role: s.role(r)}, req)
	if err != nil {
		s.opFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

// TokenList is the answer of GET /api/v1/enroll/jointokens.
type TokenList struct {
	Items []TokenInfo `json:"items"`
}

func (s *Server) opListTokens(w http.ResponseWriter, r *http.Request) {
	items, err := s.ListTokens(r.Context(), r.URL.Query().Get("boot") == "true")
	if err != nil {
		s.opFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, TokenList{Items: items})
}

// StatusResponse is the body of a call that returns no object.
type StatusResponse struct {
	Status string `json:"status"`
}

func (s *Server) opRevokeToken(w http.ResponseWriter, r *http.Request) {
	if err := s.RevokeToken(r.Context(), s.actor(r), r.PathValue("id")); err != nil {
		s.opFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, StatusResponse{Status: "revoked"})
}

func (s *Server) opRevokeMachine(w http.ResponseWriter, r *http.Request) {
	res, err := s.RevokeMachine(r.Context(), s.actor(r), r.PathValue("name"))
	if err != nil {
		s.opFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) opBootCert(w http.ResponseWriter, r *http.Request) {
	var req BootCertRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	out, err := s.ExportBootCert(r.Context(), s.actor(r), r.PathValue("name"), req)
	if err != nil {
		s.opFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) opCA(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.CA())
}

// ---- housekeeping ----------------------------------------------------------

// Housekeep removes what no longer matters: enrolled-key records older than the
// replay window, revocations of expired certificates (they left the CRL), and join
// tokens that expired more than a week ago (per-boot ones after a day). It returns how
// many objects it removed.
func (s *Server) Housekeep(ctx context.Context) (int, error) {
	now := s.now()
	removed := 0
	type rule struct {
		kind string
		old  func(created time.Time, spec json.RawMessage, labels map[string]string) bool
	}
	rules := []rule{
		{enrollKeyKind, func(created time.Time, _ json.RawMessage, _ map[string]string) bool {
			return now.Sub(created) > s.cfg.ReplayWindow
		}},
		{revocationKind, func(_ time.Time, spec json.RawMessage, _ map[string]string) bool {
			var rs revocationSpec
			return json.Unmarshal(spec, &rs) == nil && now.After(rs.NotAfter)
		}},
		{"JoinToken", func(_ time.Time, spec json.RawMessage, labels map[string]string) bool {
			var js struct {
				ExpiresAt *time.Time `json:"expiresAt"`
			}
			if json.Unmarshal(spec, &js) != nil || js.ExpiresAt == nil {
				return false
			}
			grace := 7 * 24 * time.Hour
			if labels[BootTokenLabel] == "true" {
				grace = 24 * time.Hour
			}
			return now.Sub(*js.ExpiresAt) > grace
		}},
	}
	n, err := s.sweepEnrollments(ctx, now)
	removed += n
	if err != nil {
		return removed, err
	}
	for _, rl := range rules {
		after := ""
		for {
			var names []string
			var next string
			err := s.st.View(ctx, func(tx store.Tx) error {
				objs, n, err := tx.List(ctx, rl.kind, store.ListOptions{Limit: 500, Continue: after})
				if err != nil {
					return err
				}
				next = n
				for _, o := range objs {
					created := now
					if o.Metadata.CreatedAt != nil {
						created = *o.Metadata.CreatedAt
					}
					if rl.old(created, o.Spec, o.Metadata.Labels) {
						names = append(names, o.Metadata.Name)
					}
				}
				return nil
			})
			if err != nil {
				return removed, err
			}
			if len(names) > 0 {
				err := s.st.Update(ctx, func(tx store.Tx) error {
					for _, n := range names {
						if err := tx.Delete(ctx, rl.kind, n, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
							return err
						}
					}
					if rl.kind != "JoinToken" {
						return nil
					}
					return tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "system", Action: "purge", Kind: "JoinToken", Name: "-",
						Summary: fmt.Sprintf("%d expired join tokens removed", len(names))})
				})
				if err != nil {
					return removed, err
				}
				removed += len(names)
			}
			if next == "" {
				break
			}
			after = next
		}
	}
	return removed, nil
}

// Run housekeeps every interval (default an hour) until ctx ends.
func (s *Server) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	// Refusal counts are written as their intervals end, and what is pending when
	// ctx ends is written before Run returns (the store is closed after).
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		s.refusalAggregator().Run(ctx)
	}()
	for {
		select {
		case <-ctx.Done():
			<-flushed
			return nil
		case <-t.C:
			if n, err := s.Housekeep(ctx); err != nil {
				s.log().Warn("enrollment housekeeping", "err", err)
			} else if n > 0 {
				s.log().Info("enrollment housekeeping", "removed", n)
			}
		}
	}
}
