// Package api is Kiln's operator REST API under /api/v1. It translates HTTP to the
// inventory service and back; it holds no business rules of its own.
package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/apitoken"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/httpjson"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/role"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/workflow"
)

// DefaultMaxBodyBytes bounds request bodies unless configured otherwise.
const DefaultMaxBodyBytes = 4 << 20

// Server serves the operator API.
type Server struct {
	Inventory    *inventory.Service
	Store        store.Store
	Logger       *slog.Logger
	MaxBodyBytes int64
	Version      string
	// Workflows starts workflows (reprovision); nil disables that route's action.
	Workflows *workflow.Engine
	// AgentArtifacts are the artifacts profiles with boot.agent boot (kiln serve
	// --agent-kernel, --agent-initrd); apply and reprovision warn while they are missing.
	AgentArtifacts []string
	// ArtifactSource, if set, says why an artifact's source cannot be served now (a
	// local file missing from the artifact directory); a reprovision warns with it.
	ArtifactSource func(spec *resource.ArtifactSpec) error
	// PowerReprovision, if set, sets next boot to PXE and power-cycles a machine with
	// a BMC after a reprovision; it returns the power job's id ("" without a BMC).
	PowerReprovision func(ctx context.Context, actor, machine string) (string, error)
	// AuditChain verifies the keyed part of the audit chain and its anchored head;
	// nil verifies the unkeyed chain against the database's head only.
	AuditChain *audit.Chain
	// Sessions authenticates the web console's people by their session cookie
	// when a request carries no bearer token; nil: API tokens only.
	Sessions SessionAuth
	// Watches serves ?watch=1 (Server-Sent Events); nil answers it with 501.
	Watches *Watches

	routes []route
	extra  []route
}

// AddRoute adds an operator route served by another package (secrets, enrollment,
// power): it gets the same authorization as the built-in ones and appears in the
// OpenAPI document. Call it before Register.
func (s *Server) AddRoute(method, path, role, summary string, h http.HandlerFunc) {
	s.extra = append(s.extra, route{method: method, path: path, role: role, summary: summary, handler: h, response: "Object"})
}

// ActorOf is the authenticated caller of an operator request.
func ActorOf(r *http.Request) inventory.Actor { return actor(r) }

// route is one API operation; the table drives both the mux and the OpenAPI document.
type route struct {
	method, path string
	role         string // minimum role; "" for no authentication
	summary      string
	handler      http.HandlerFunc
	// kindPath: path holds {kind}, expanded to each kind's plural in the OpenAPI document.
	kindPath bool
	body     string // request body schema name, if any
	response string // response schema name
}

// Register adds the API routes to mux.
func (s *Server) Register(mux *http.ServeMux) {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.MaxBodyBytes <= 0 {
		s.MaxBodyBytes = DefaultMaxBodyBytes
	}
	s.routes = append(s.routeTable(), s.extra...)
	for _, rt := range s.routes {
		mux.Handle(rt.method+" "+rt.path, s.authorize(rt.role, rt.handler))
	}
}

// Patterns lists the mux patterns Register added ("GET /api/v1/{kind}").
func (s *Server) Patterns() []string {
	out := make([]string, len(s.routes))
	for i, rt := range s.routes {
		out[i] = rt.method + " " + rt.path
	}
	return out
}

func (s *Server) routeTable() []route {
	v := store.RoleViewer
	o := store.RoleOperator
	a := store.RoleAdmin
	return []route{
		{method: "GET", path: "/api/v1/openapi.json", summary: "This document", handler: s.openAPI, response: "OpenAPI"},
		{method: "GET", path: "/api/v1/version", role: v, summary: "The server's version", handler: s.version, response: "Version"},
		{method: "GET", path: "/api/v1/whoami", role: v, summary: "The calling token's id and role", handler: s.whoami, response: "APIToken"},
		{method: "POST", path: "/api/v1/apply", role: o, summary: "Create or update several objects in one transaction (all or none)", handler: s.apply, body: "ApplyRequest", response: "ApplyResponse"},
		{method: "GET", path: "/api/v1/events", role: v, summary: "Every machine's events after resourceVersion (machine, type, limit); watch=1 streams them as Server-Sent Events (resume with Last-Event-ID or resourceVersion; 410 when retention removed it)", handler: s.eventLog, response: "EventLogList"},
		{method: "GET", path: "/api/v1/{kind}", role: v, kindPath: true, summary: "List objects (labelSelector, limit, continue); watch=1 streams ADDED, MODIFIED and DELETED as Server-Sent Events (resume with Last-Event-ID or resourceVersion; 410 when retention removed it)", handler: s.list, response: "List"},
		{method: "POST", path: "/api/v1/{kind}", role: o, kindPath: true, summary: "Create an object (409 if it exists)", handler: s.create, body: "Object", response: "Object"},
		{method: "GET", path: "/api/v1/{kind}/{name}", role: v, kindPath: true, summary: "Get an object", handler: s.get, response: "Object"},
		{method: "PUT", path: "/api/v1/{kind}/{name}", role: o, kindPath: true, summary: "Replace an object's labels and spec (409 on a stale resourceVersion)", handler: s.update, body: "Object", response: "Object"},
		{method: "DELETE", path: "/api/v1/{kind}/{name}", role: o, kindPath: true, summary: "Delete an object (resourceVersion query parameter for a conditional delete)", handler: s.delete, response: "Status"},
		{method: "GET", path: "/api/v1/machines/{name}/events", role: v, summary: "A machine's newest events (limit, default 50)", handler: s.events, response: "EventList"},
		{method: "GET", path: "/api/v1/webhooks/{name}/deliveries", role: v, summary: "A webhook's dead-letter list: events not delivered after every attempt, newest first (failed=1, limit)", handler: s.webhookDeliveries, response: "WebhookDeliveryList"},
		{method: "POST", path: "/api/v1/machines/{name}/reprovision", role: o, summary: "Start a new workflow on a machine (the profile's template, or the given one); its state becomes provisioning", handler: s.reprovision, body: "ReprovisionRequest", response: "WorkflowView"},
		{method: "POST", path: "/api/v1/machines/{name}/upgrade", role: o, summary: "Write a dm-verity image (an Artifact with spec.verity) to the machine's inactive A/B slot and boot it, falling back to the running slot if it does not come up", handler: s.upgrade, body: "UpgradeRequest", response: "WorkflowView"},
		{method: "POST", path: "/api/v1/machines/{name}/cancel", role: o, summary: "End a machine's pending or running workflow; the machine goes back to the state it had before it", handler: s.cancelWorkflow, response: "CancelResponse"},
		{method: "GET", path: "/api/v1/machines/{name}/workflow", role: v, summary: "A machine's newest workflow with each action's state, progress and last log lines", handler: s.machineWorkflow, response: "WorkflowView"},
		{method: "GET", path: "/api/v1/lookup/mac/{mac}", role: v, summary: "The machine that owns a MAC address", handler: s.lookupMAC, response: "Object"},
		{method: "GET", path: "/api/v1/audit", role: v, summary: "Audit entries after a sequence number (after, limit)", handler: s.auditList, response: "AuditList"},
		{method: "GET", path: "/api/v1/audit/verify", role: v, summary: "Verify the audit hash chain", handler: s.auditVerify, response: "AuditVerify"},
		{method: "GET", path: "/api/v1/apitokens", role: a, summary: "List API tokens (never their secrets)", handler: s.tokenList, response: "APITokenList"},
		{method: "POST", path: "/api/v1/apitokens", role: a, summary: "Create an API token; the token is in the response only", handler: s.tokenCreate, body: "APITokenRequest", response: "APITokenCreated"},
		{method: "DELETE", path: "/api/v1/apitokens/{id}", role: a, summary: "Revoke an API token", handler: s.tokenRevoke, response: "Status"},
	}
}

// ---- auth -----------------------------------------------------------------

type ctxKey struct{}

// sessionKey holds a console session's person in a request's context.
type sessionKey struct{}

// SessionAuth authenticates a person signed in to the web console.
type SessionAuth interface {
	// SessionActor returns the person a request's session cookie names. ok is
	// false when the request carries no session cookie; err is a cookie naming
	// no live session, or a write without the session's CSRF proof
	// (errors.Is ErrCrossSite).
	SessionActor(r *http.Request) (who inventory.Actor, ok bool, err error)
	// BearerActor returns the person a `kiln login` bearer token names; ok is
	// false when the token is not such a token (an API token).
	BearerActor(token string) (who inventory.Actor, ok bool, err error)
}

// ErrCrossSite is a write made with a session cookie that does not prove it came
// from Kiln's own pages (no CSRF token, another origin): refused with 403.
var ErrCrossSite = errors.New("a write with a session cookie needs the X-Kiln-CSRF header and a same-origin request")

// authorizeSession is authorize for a request with no bearer token: the
// console's session cookie, if there is one. handled reports that it answered.
func (s *Server) authorizeSession(w http.ResponseWriter, r *http.Request, need string, h http.HandlerFunc) (handled bool) {
	if s.Sessions == nil {
		return false
	}
	who, ok, err := s.Sessions.SessionActor(r)
	if !ok {
		return false
	}
	switch {
	case errors.Is(err, ErrCrossSite):
		writeError(w, http.StatusForbidden, err.Error())
	case err != nil:
		writeError(w, http.StatusUnauthorized, err.Error())
	case !role.Allows(who.Role, need):
		writeError(w, http.StatusForbidden, fmt.Sprintf("role %s may not do this (needs %s)", who.Role, need))
	default:
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, who)))
	}
	return true
}

func (s *Server) authorize(need string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if need == "" {
			h(w, r)
			return
		}
		bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if r.Header.Get("Authorization") == "" && s.authorizeSession(w, r, need, h) {
			return
		}
		if !ok || bearer == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
			writeError(w, http.StatusUnauthorized, "an API token is required (Authorization: Bearer ...)")
			return
		}
		if s.Sessions != nil {
			who, ok, err := s.Sessions.BearerActor(strings.TrimSpace(bearer))
			switch {
			case ok && err != nil:
				w.Header().Set("WWW-Authenticate", `Bearer realm="kiln", error="invalid_token"`)
				writeError(w, http.StatusUnauthorized, err.Error()+" (kiln login)")
				return
			case ok && !role.Allows(who.Role, need):
				writeError(w, http.StatusForbidden, fmt.Sprintf("role %s may not do this (needs %s)", who.Role, need))
				return
			case ok:
				h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, who)))
				return
			}
		}
		tok, err := apitoken.Authenticate(r.Context(), s.Store, strings.TrimSpace(bearer))
		if err != nil {
			if !errors.Is(err, apitoken.ErrInvalid) {
				s.Logger.Error("authenticate", "err", err)
				writeError(w, http.StatusServiceUnavailable, "cannot check the API token: store unavailable")
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid or revoked API token")
			return
		}
		if !role.Allows(tok.Role, need) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("role %s may not do this (needs %s)", tok.Role, need))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, tok)))
	})
}

func actor(r *http.Request) inventory.Actor {
	if t, ok := r.Context().Value(ctxKey{}).(*store.APIToken); ok {
		return inventory.Actor{ID: "token:" + t.ID, Role: t.Role}
	}
	if who, ok := r.Context().Value(sessionKey{}).(inventory.Actor); ok {
		return who
	}
	return inventory.Actor{ID: "anonymous"}
}

// ---- handlers -------------------------------------------------------------

func (s *Server) kind(w http.ResponseWriter, r *http.Request) (*resource.Kind, bool) {
	k, ok := resource.LookupKind(r.PathValue("kind"))
	if !ok || k.Plural != r.PathValue("kind") {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no resource %q under /api/v1 (kinds: %s)", r.PathValue("kind"), pluralNames()))
		return nil, false
	}
	return k, true
}

func pluralNames() string {
	var n []string
	for _, k := range resource.Kinds() {
		n = append(n, k.Plural)
	}
	return strings.Join(n, ", ")
}

// ListResponse is a page of objects.
type ListResponse struct {
	Items    []*resource.Object `json:"items"`
	Continue string             `json:"continue,omitempty"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	k, ok := s.kind(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	sel, err := resource.ParseSelector(q.Get("labelSelector"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if watching(r) {
		s.watchKind(w, r, k, sel)
		return
	}
	limit, err := intParam(q.Get("limit"), 0, 0, 100000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "limit: "+err.Error())
		return
	}
	items, next, err := s.Inventory.List(r.Context(), k.Name, store.ListOptions{Selector: sel, Limit: limit, Continue: q.Get("continue")})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ListResponse{Items: httpjson.List(items), Continue: next})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	k, ok := s.kind(w, r)
	if !ok {
		return
	}
	obj, err := s.Inventory.Get(r.Context(), k.Name, r.PathValue("name"))
	if err != nil {
		s.failObject(w, r, k, err)
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

// readObject decodes and validates a body holding one object of kind k.
func (s *Server) readObject(w http.ResponseWriter, r *http.Request, k *resource.Kind) (*resource.Object, bool) {
	raw, ok := s.readBody(w, r)
	if !ok {
		return nil, false
	}
	obj, err := resource.DecodeJSON(raw)
	if err != nil {
		writeError(w, statusForDecode(err), err.Error())
		return nil, false
	}
	if obj.Kind != k.Name {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("kind: %s does not belong under /api/v1/%s", obj.Kind, k.Plural))
		return nil, false
	}
	return obj, true
}

func statusForDecode(err error) int {
	if strings.HasPrefix(err.Error(), "malformed JSON") {
		return http.StatusBadRequest
	}
	return http.StatusUnprocessableEntity
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.MaxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes (--max-body-bytes)", mb.Limit))
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return nil, false
	}
	return raw, true
}

// writable refuses operator writes (create, replace, delete) to kinds only Kiln
// writes (power jobs).
func writable(w http.ResponseWriter, k *resource.Kind) bool {
	if k.ReadOnly {
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s are written by Kiln only", k.Plural))
		return false
	}
	return true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	k, ok := s.kind(w, r)
	if !ok || !writable(w, k) {
		return
	}
	obj, ok := s.readObject(w, r, k)
	if !ok {
		return
	}
	out, err := s.Inventory.Create(r.Context(), actor(r), obj)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.Logger.Info("created", "kind", out.Kind, "name", out.Metadata.Name, "actor", actor(r).ID)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	k, ok := s.kind(w, r)
	if !ok || !writable(w, k) {
		return
	}
	obj, ok := s.readObject(w, r, k)
	if !ok {
		return
	}
	if obj.Metadata.Name != r.PathValue("name") {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("metadata.name: %q does not match the path's %q", obj.Metadata.Name, r.PathValue("name")))
		return
	}
	out, err := s.Inventory.Update(r.Context(), actor(r), obj)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.Logger.Info("updated", "kind", out.Kind, "name", out.Metadata.Name, "actor", actor(r).ID)
	writeJSON(w, http.StatusOK, out)
}

// StatusResponse is the body of a call that returns no object.
type StatusResponse struct {
	Status string `json:"status"`
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	// A read-only kind is a record Kiln keeps (a power job is the trace of a BMC
	// call): deleting it would let an operator erase that trace.
	k, ok := s.kind(w, r)
	if !ok || !writable(w, k) {
		return
	}
	del := s.Inventory.Delete
	if r.URL.Query().Get("cascade") == "true" {
		del = s.Inventory.DeleteCascade // a machine's workflows too
	}
	if err := del(r.Context(), actor(r), k.Name, r.PathValue("name"), r.URL.Query().Get("resourceVersion")); err != nil {
		s.failObject(w, r, k, err)
		return
	}
	s.Logger.Info("deleted", "kind", k.Name, "name", r.PathValue("name"), "actor", actor(r).ID)
	writeJSON(w, http.StatusOK, StatusResponse{Status: "deleted"})
}

// ApplyRequest carries the objects of one apply.
type ApplyRequest struct {
	Objects []json.RawMessage `json:"objects"`
	// DryRun checks everything an apply would (server-side) and writes nothing.
	DryRun bool `json:"dryRun,omitempty"`
}

// ApplyResponse says what happened (or, in a dry run, would happen) to each object.
type ApplyResponse struct {
	Results []inventory.Result `json:"results"`
	DryRun  bool               `json:"dryRun,omitempty"`
	// Warnings are what applied but will not work yet (a profile booting the agent
	// while the agent's artifacts do not exist).
	Warnings []string `json:"warnings,omitempty"`
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	raw, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req ApplyRequest
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return
	}
	if len(req.Objects) == 0 {
		writeError(w, http.StatusUnprocessableEntity, "objects: at least one object is required")
		return
	}
	if len(req.Objects) > resource.MaxDocuments {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("objects: more than %d objects in one apply", resource.MaxDocuments))
		return
	}
	objs := make([]*resource.Object, 0, len(req.Objects))
	for i, o := range req.Objects {
		obj, err := resource.DecodeJSON(o)
		if err != nil {
			writeError(w, statusForDecode(err), fmt.Sprintf("objects[%d]: %v", i, err))
			return
		}
		if k, _ := resource.LookupKind(obj.Kind); k != nil && k.ReadOnly {
			writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("objects[%d]: %s objects are written by Kiln only", i, obj.Kind))
			return
		}
		objs = append(objs, obj)
	}
	if req.DryRun {
		results, err := s.Inventory.ApplyDryRun(r.Context(), actor(r), objs)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, ApplyResponse{Results: results, DryRun: true, Warnings: s.agentArtifactWarnings(r.Context(), objs)})
		return
	}
	results, err := s.Inventory.Apply(r.Context(), actor(r), objs)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	changed := 0
	for _, res := range results {
		if res.Outcome != inventory.Unchanged {
			changed++
		}
	}
	s.Logger.Info("applied", "objects", len(results), "changed", changed, "actor", actor(r).ID)
	writeJSON(w, http.StatusOK, ApplyResponse{Results: results, Warnings: s.agentArtifactWarnings(r.Context(), objs)})
}

// EventList is a machine's timeline.
type EventList struct {
	Items []store.Event `json:"items"`
	// ResourceVersion is the event log's newest id, read before the items: watch
	// /api/v1/events?machine=NAME from the greater of it and the last item's id
	// to follow the timeline without a gap.
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r.URL.Query().Get("limit"), 50, 1, 10000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "limit: "+err.Error())
		return
	}
	name := r.PathValue("name")
	if _, err := s.Inventory.Get(r.Context(), "Machine", name); err != nil {
		s.fail(w, r, err)
		return
	}
	var marks store.StreamMarks
	err = s.Store.View(r.Context(), func(tx store.Tx) error {
		var err error
		marks, err = tx.StreamMarks(r.Context())
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	evs, err := s.Inventory.Events(r.Context(), name, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, EventList{Items: httpjson.List(evs), ResourceVersion: strconv.FormatInt(marks.EventHead, 10)})
}

func (s *Server) lookupMAC(w http.ResponseWriter, r *http.Request) {
	m, err := s.Inventory.MachineByMAC(r.Context(), r.PathValue("mac"))
	if err != nil {
		s.fail(w, r, fmt.Errorf("machine with mac %s: %w", r.PathValue("mac"), err))
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// AuditList is a page of audit entries.
type AuditList struct {
	Items []audit.Entry `json:"items"`
	// Head is the newest entry's sequence number, for paging with after.
	Head int64 `json:"head"`
}

func (s *Server) auditList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, err := intParam(q.Get("after"), 0, 0, 1<<62)
	if err != nil {
		writeError(w, http.StatusBadRequest, "after: "+err.Error())
		return
	}
	limit, err := intParam(q.Get("limit"), 1000, 1, 100000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "limit: "+err.Error())
		return
	}
	tail, err := intParam(q.Get("tail"), 0, 0, 100000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "tail: "+err.Error())
		return
	}
	var items []audit.Entry
	var head int64
	err = s.Store.View(r.Context(), func(tx store.Tx) error {
		var err error
		if head, _, err = tx.AuditHead(r.Context()); err != nil {
			return err
		}
		from := int64(after)
		if tail > 0 {
			// The newest tail entries (sequence numbers are dense), newest last.
			from, limit = max(from, head-int64(tail)), tail
		}
		items, err = tx.ListAudit(r.Context(), from, limit)
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, AuditList{Items: httpjson.List(items), Head: head})
}

// AuditVerifyResponse reports the result of walking the chain.
type AuditVerifyResponse = store.AuditVerification

func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request) {
	res, err := store.VerifyAudit(r.Context(), s.Store, s.AuditChain)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// VersionResponse is the server's build.
type VersionResponse struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, VersionResponse{Version: cmp.Or(s.Version, "unknown"), GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH})
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	if who, ok := r.Context().Value(sessionKey{}).(inventory.Actor); ok {
		// A console session: the person, in the fields a token's answer has.
		writeJSON(w, http.StatusOK, map[string]string{"id": who.ID, "name": who.ID, "role": who.Role})
		return
	}
	t, _ := r.Context().Value(ctxKey{}).(*store.APIToken)
	writeJSON(w, http.StatusOK, t)
}

// APITokenRequest asks for a new token.
type APITokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// APITokenCreated carries the new token, shown this once.
type APITokenCreated struct {
	store.APIToken
	Token string `json:"token"`
}

// APITokenList lists tokens without secrets.
type APITokenList struct {
	Items []store.APIToken `json:"items"`
}

func (s *Server) tokenList(w http.ResponseWriter, r *http.Request) {
	var items []store.APIToken
	err := s.Store.View(r.Context(), func(tx store.Tx) error {
		var err error
		items, err = tx.ListAPITokens(r.Context())
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, APITokenList{Items: httpjson.List(items)})
}

// decodeStrict reads a JSON body into v, refusing unknown fields; an empty body
// leaves v as it is.
func (s *Server) decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	raw, ok := s.readBody(w, r)
	if !ok {
		return false
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return true
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return false
	}
	return true
}

func (s *Server) tokenCreate(w http.ResponseWriter, r *http.Request) {
	var req APITokenRequest
	if !s.decodeStrict(w, r, &req) {
		return
	}
	if req.Name != "" && resource.ValidateName(req.Name) != nil {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("name: %q is not a valid name", req.Name))
		return
	}
	tok, t, err := apitoken.New(req.Role, req.Name, time.Now())
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "role: "+err.Error())
		return
	}
	err = s.Store.Update(r.Context(), func(tx store.Tx) error {
		if err := tx.CreateAPIToken(r.Context(), t); err != nil {
			return err
		}
		return tx.AppendAudit(r.Context(), &audit.Entry{Time: time.Now().UTC(), Actor: actor(r).ID, Action: "create",
			Kind: "APIToken", Name: t.ID, Summary: fmt.Sprintf("created: role %s, name %q", t.Role, t.Name)})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.Logger.Info("api token created", "token_id", t.ID, "role", t.Role, "actor", actor(r).ID)
	writeJSON(w, http.StatusCreated, APITokenCreated{APIToken: *t, Token: tok})
}

func (s *Server) tokenRevoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := s.Store.Update(r.Context(), func(tx store.Tx) error {
		if err := tx.RevokeAPIToken(r.Context(), id, time.Now().UTC()); err != nil {
			return fmt.Errorf("revoke api token %q: %w", id, err)
		}
		return tx.AppendAudit(r.Context(), &audit.Entry{Time: time.Now().UTC(), Actor: actor(r).ID, Action: "revoke",
			Kind: "APIToken", Name: id, Summary: "revoked"})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.Logger.Info("api token revoked", "token_id", id, "actor", actor(r).ID)
	writeJSON(w, http.StatusOK, StatusResponse{Status: "revoked"})
}

// ---- plumbing -------------------------------------------------------------

// ErrorResponse is the body of every error.
type ErrorResponse = httpjson.ErrorResponse

// failObject is fail for a request about the object named in the path: a missing
// object is said once, as `machine "web-9" not found`, not as the chain of layers
// that looked for it.
func (s *Server) failObject(w http.ResponseWriter, r *http.Request, k *resource.Kind, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("%s %q not found", strings.ToLower(k.Name), r.PathValue("name")))
		return
	}
	s.fail(w, r, err)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ve *inventory.ValidationError
	var oe *resource.ObjectError
	var fe *inventory.ForbiddenError
	switch {
	case errors.As(err, &fe):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.As(err, &ve), errors.As(err, &oe):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrDuplicateKey):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, "request cancelled or timed out")
	default:
		s.Logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error (see the server log)")
	}
}

var (
	writeError = httpjson.Error
	writeJSON  = httpjson.Write
)

func intParam(s string, def, min, max int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min || n > max {
		return 0, fmt.Errorf("%q is not an integer between %d and %d", s, min, max)
	}
	return n, nil
}
