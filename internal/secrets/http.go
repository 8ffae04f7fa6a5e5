package secrets

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/config"
	"github.com/kilnhq/kiln/internal/httpjson"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Identity maps a request to the machine that made it, from its verified client
// certificate; ok is false when the request carries no machine identity. The
// enrollment service provides it.
type Identity func(r *http.Request) (machine string, ok bool)

// Server serves secrets and configs over HTTP: the operator API routes, the agent's
// mTLS config routes and the public handle routes. It only translates; Service decides.
type Server struct {
	Service *Service
	// Identity names the machine behind an mTLS request (agent routes).
	Identity Identity
	// Actor names the operator behind an API request (operator routes); the API's
	// authentication has run before. Nil: "anonymous".
	Actor  func(r *http.Request) inventory.Actor
	Logger *slog.Logger
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) actor(r *http.Request) inventory.Actor {
	if s.Actor == nil {
		return inventory.Actor{ID: "anonymous"}
	}
	return s.Actor(r)
}

// RegisterPublic adds the unauthenticated routes: single-use handles, their status,
// and configs over plain HTTP for profiles that allow it (by MAC, in the path so that
// a NoCloud seed URL ds=nocloud;s=http://kiln/config/by-mac/MAC/cloud-init/ works;
// iPXE's ${mac:hexhyp} form is accepted).
func (s *Server) RegisterPublic(mux *http.ServeMux) {
	mux.HandleFunc("GET /secret-handles/{id}", s.redeem)
	mux.HandleFunc("GET /secret-handles/{id}/status", s.handleStatus)
	mux.HandleFunc("GET /config/by-mac/{mac}/ignition", s.publicConfig(config.KindIgnition))
	mux.HandleFunc("GET /config/by-mac/{mac}/cloud-init/{part}", s.publicConfig(config.KindCloudInit))
	mux.HandleFunc("GET /config/by-mac/{mac}/files/{name}", s.publicConfig(config.KindFile))
}

// RegisterAgent adds the machine's config routes, each wrapped by wrap (the mTLS
// middleware; nil: none). A machine gets its own configs; ?machine=OTHER is refused
// with 403 and audited.
func (s *Server) RegisterAgent(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	if wrap == nil {
		wrap = func(h http.Handler) http.Handler { return h }
	}
	mux.Handle("GET /config/ignition", wrap(s.agentConfig(config.KindIgnition)))
	mux.Handle("GET /config/cloud-init/{part}", wrap(s.agentConfig(config.KindCloudInit)))
	mux.Handle("GET /config/files/{name}", wrap(s.agentConfig(config.KindFile)))
	mux.Handle("GET /config/secrets/{name}", wrap(http.HandlerFunc(s.agentSecret)))
}

// RegisterOperator adds the operator API routes through register, which must wrap
// each handler with the API's authentication and the given minimum role.
func (s *Server) RegisterOperator(register func(method, path, role, summary string, h http.HandlerFunc)) {
	v, o, a := store.RoleViewer, store.RoleOperator, store.RoleAdmin
	register("PUT", "/api/v1/secrets/{name}/value", o, "Store a new version of a secret's value (body {\"value\": base64}); creates the Secret if missing", s.setValue)
	register("GET", "/api/v1/secrets/{name}/value", a, "Reveal a secret's value (version query parameter; default the newest); audited", s.revealValue)
	register("GET", "/api/v1/secrets/{name}/versions", v, "A secret's versions (never values)", s.versions)
	register("GET", "/api/v1/secrets/{name}/audit", v, "Audit entries about a secret: who set, revealed and received it (after, limit)", s.auditList)
	register("DELETE", "/api/v1/secrets/{name}", o, "Delete a secret with every version (refused while a profile or machine refers to it)", s.deleteSecret)
	register("POST", "/api/v1/secrets/rotate-key", a, "Rotate the key-encryption key: re-wrap every data key", s.rotateKey)
	register("GET", "/api/v1/render/{machine}", o, "Render a machine's config with secrets masked (kind=ignition|cloud-init|file, part)", s.renderPreview)
}

// ---- operator routes --------------------------------------------------------

// SetValueRequest carries a value, base64-encoded (values may be binary).
type SetValueRequest struct {
	Value string `json:"value"`
}

// ValueResponse is a revealed value.
type ValueResponse struct {
	VersionInfo
	Value string `json:"value"` // base64
}

// VersionList lists a secret's versions.
type VersionList struct {
	Items []VersionInfo `json:"items"`
}

// AuditList is a page of audit entries (the shape of /api/v1/audit).
type AuditList struct {
	Items []audit.Entry `json:"items"`
}

// RenderResponse is an operator's preview of a machine's config.
type RenderResponse struct {
	Rendered
	Content string `json:"content"`
}

// StatusResponse is the body of a call that returns no object.
type StatusResponse struct {
	Status string `json:"status"`
}

func (s *Server) setValue(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	// base64 of the largest value, plus room for the JSON around it.
	limit := int64(base64.StdEncoding.EncodedLen(s.Service.maxValue())) + 1024
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("secret %q: the value is larger than the limit of %d bytes", name, s.Service.maxValue()))
			return
		}
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	var req SetValueRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// The decoder's message can quote the input: say only what kind of problem it is.
		writeError(w, http.StatusBadRequest, `malformed JSON: the body must be {"value": "<base64>"}`)
		return
	}
	value, err := base64.StdEncoding.DecodeString(req.Value)
	if err != nil {
		writeError(w, http.StatusBadRequest, "value: not standard base64")
		return
	}
	defer clear(value)
	vi, err := s.Service.Set(r.Context(), s.actor(r), name, value)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, vi)
}

func (s *Server) revealValue(w http.ResponseWriter, r *http.Request) {
	version, err := int64Param(r.URL.Query().Get("version"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "version: "+err.Error())
		return
	}
	value, vi, err := s.Service.Reveal(r.Context(), s.actor(r), r.PathValue("name"), version)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer clear(value)
	writeJSON(w, http.StatusOK, ValueResponse{VersionInfo: *vi, Value: base64.StdEncoding.EncodeToString(value)})
}

func (s *Server) versions(w http.ResponseWriter, r *http.Request) {
	items, err := s.Service.Versions(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, VersionList{Items: httpjson.List(items)})
}

func (s *Server) auditList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, err := int64Param(q.Get("after"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "after: "+err.Error())
		return
	}
	limit, err := int64Param(q.Get("limit"))
	if err != nil || limit > 100000 {
		writeError(w, http.StatusBadRequest, "limit: not an integer between 0 and 100000")
		return
	}
	if limit == 0 {
		limit = 1000
	}
	items, err := s.Service.Audit(r.Context(), r.PathValue("name"), after, int(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, AuditList{Items: httpjson.List(items)})
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request) {
	if err := s.Service.Delete(r.Context(), s.actor(r), r.PathValue("name")); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, StatusResponse{Status: "deleted"})
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	res, err := s.Service.RotateKEK(r.Context(), s.actor(r))
	if err != nil {
		if res != nil { // committed; only the file swap failed
			s.log().Error("key rotation", "err", err)
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) renderPreview(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kind := q.Get("kind")
	if kind == "" {
		kind = config.KindIgnition
	}
	part := q.Get("part")
	if kind == config.KindCloudInit && part == "" {
		part = "user-data"
	}
	if kind == config.KindFile && part == "" {
		part = q.Get("name")
	}
	target, err := config.ParseTarget(kind, part)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out, err := s.Service.Render(r.Context(), RenderRequest{Machine: r.PathValue("machine"), Target: target, Mode: ModePreview,
		BaseURL: baseURL(r), Actor: s.actor(r).ID})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RenderResponse{Rendered: *out, Content: string(out.Content)})
}

// ---- agent routes (mTLS) ------------------------------------------------------

// machineFor returns the machine an mTLS request is about: its own. Asking for
// another's (?machine=) is denied and audited.
func (s *Server) machineFor(w http.ResponseWriter, r *http.Request, what string) (string, bool) {
	if s.Identity == nil {
		writeError(w, http.StatusUnauthorized, "a machine certificate is required")
		return "", false
	}
	m, ok := s.Identity(r)
	if !ok || m == "" {
		writeError(w, http.StatusUnauthorized, "a machine certificate is required")
		return "", false
	}
	if other := r.URL.Query().Get("machine"); other != "" && other != m {
		s.log().Warn("machine asked for another machine's data", "machine", m, "target", other, "what", what)
		s.Service.DenyOtherMachine(r.Context(), m, other, what)
		writeError(w, http.StatusForbidden, fmt.Sprintf("machine %q may not read %s of machine %q", m, what, other))
		return "", false
	}
	return m, true
}

func (s *Server) agentConfig(kind string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if noHead(w, r) {
			return
		}
		target, err := config.ParseTarget(kind, partOf(r, kind))
		if err != nil {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		m, ok := s.machineFor(w, r, "the "+target.String()+" config")
		if !ok {
			return
		}
		out, err := s.Service.Render(r.Context(), RenderRequest{Machine: m, Target: target, Mode: ModeDeliver,
			BaseURL: baseURL(r), Actor: "machine:" + m})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.log().Info("config served", "machine", m, "config", target.String(), "channel", "mtls", "secrets", len(out.Releases))
		writeContent(w, target.ContentType(), out.Content)
	})
}

func (s *Server) agentSecret(w http.ResponseWriter, r *http.Request) {
	if noHead(w, r) {
		return
	}
	m, ok := s.machineFor(w, r, "secret "+strconv.Quote(r.PathValue("name")))
	if !ok {
		return
	}
	rel, err := s.Service.Fetch(r.Context(), m, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer clear(rel.Value)
	w.Header().Set("X-Kiln-Secret-Version", strconv.FormatInt(rel.Version, 10))
	writeContent(w, "application/octet-stream", rel.Value)
}

func partOf(r *http.Request, kind string) string {
	switch kind {
	case config.KindCloudInit:
		return r.PathValue("part")
	case config.KindFile:
		return r.PathValue("name")
	}
	return ""
}

// ---- public routes ----------------------------------------------------------

func (s *Server) publicConfig(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		target, err := config.ParseTarget(kind, partOf(r, kind))
		if err != nil {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		mac, err := resource.NormalizeMAC(strings.ReplaceAll(r.PathValue("mac"), "-", ":"))
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("mac: %q is not a MAC address", r.PathValue("mac")))
			return
		}
		var machine string
		err = s.Service.Store.View(r.Context(), func(tx store.Tx) error {
			m, err := tx.LookupKey(r.Context(), "Machine", "mac:"+mac)
			if err == nil {
				machine = m.Metadata.Name
			}
			return err
		})
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				writeError(w, http.StatusNotFound, "no machine has mac "+mac)
				return
			}
			s.fail(w, r, err)
			return
		}
		out, err := s.Service.Render(r.Context(), RenderRequest{Machine: machine, Target: target, Mode: ModePublic,
			BaseURL: baseURL(r), Actor: "http:" + remoteIP(r)})
		if err != nil {
			if errors.Is(err, ErrNotPublic) {
				// Say why to the operator (log, timeline), not to whoever asked.
				s.log().Warn("config refused over plain HTTP", "machine", machine, "config", target.String(), "remote", remoteIP(r), "err", err)
				writeError(w, http.StatusForbidden, "this config is only served over mTLS")
				return
			}
			s.fail(w, r, err)
			return
		}
		s.log().Info("config served", "machine", machine, "config", target.String(), "channel", "http", "remote", remoteIP(r))
		writeContent(w, target.ContentType(), out.Content)
	}
}

// noHead refuses HEAD, which a GET pattern also matches: a HEAD must not burn a
// handle or release (and audit) a value whose body is never sent.
func noHead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodHead {
		w.Header().Set("Allow", "GET")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return true
	}
	return false
}

func (s *Server) redeem(w http.ResponseWriter, r *http.Request) {
	if noHead(w, r) {
		return
	}
	if crossedInClear(r) {
		s.fail(w, r, s.Service.RefusePlainHTTP(r.Context(), r.PathValue("id"), remoteIP(r)))
		return
	}
	rel, err := s.Service.Redeem(r.Context(), r.PathValue("id"), remoteIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer clear(rel.Value)
	writeContent(w, "application/octet-stream", rel.Value)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	if crossedInClear(r) {
		// The id is the credential, whatever the route: over plain HTTP it is burnt.
		s.fail(w, r, s.Service.RefusePlainHTTP(r.Context(), r.PathValue("id"), remoteIP(r)))
		return
	}
	st, err := s.Service.Status(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// ---- plumbing -----------------------------------------------------------------

// statusFor maps an error to an HTTP status. Messages of the errors mapped here are
// safe to show: Service errors never quote a value.
func statusFor(err error) int {
	var ie *InputError
	var re *RenderError
	switch {
	case errors.Is(err, ErrBadHandle):
		return http.StatusBadRequest
	case errors.Is(err, store.ErrHandleUsed), errors.Is(err, store.ErrHandleExpired):
		return http.StatusGone
	case errors.Is(err, ErrDenied), errors.Is(err, ErrNotPublic), errors.Is(err, ErrHandleOverHTTP):
		return http.StatusForbidden
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.As(err, &ie), errors.As(err, &re):
		return http.StatusUnprocessableEntity
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrExists):
		return http.StatusConflict
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := statusFor(err)
	msg := err.Error()
	switch {
	case errors.Is(err, store.ErrHandleUsed):
		msg = "this handle was already used"
	case errors.Is(err, store.ErrHandleExpired):
		msg = "this handle has expired"
	case errors.Is(err, store.ErrNotFound) && strings.HasPrefix(r.URL.Path, "/secret-handles/"):
		msg = "no such handle"
	case code == http.StatusServiceUnavailable:
		msg = "request cancelled or timed out"
	case code == http.StatusInternalServerError:
		s.log().Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error (see the server log)"
		if errors.Is(err, ErrKeyUnavailable) || errors.Is(err, ErrNoHTTPS) {
			msg = err.Error() // key ids only, or a configuration fact: the operator needs it
		}
	}
	writeError(w, code, msg)
}

func writeContent(w http.ResponseWriter, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

var (
	writeError = httpjson.Error
	writeJSON  = httpjson.Write
)

func int64Param(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a non-negative integer", s)
	}
	return n, nil
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// crossedInClear reports whether a request came over plain HTTP from another host.
// Loopback is not the network: the CLI on Kiln's own host (kiln secret
// handle-status) and a TLS-terminating proxy beside Kiln reach it that way.
func crossedInClear(r *http.Request) bool {
	if r.TLS != nil {
		return false
	}
	ip, err := netip.ParseAddr(remoteIP(r))
	return err != nil || !ip.IsLoopback()
}

func remoteIP(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}
