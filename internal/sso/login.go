package sso

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/kilnhq/kiln/internal/safetext"
)

// Handler serves the console's sign-in: /ui/login, /ui/callback, /ui/logout,
// /ui/session, and /ui/login/token (an API token pasted once, for sites without
// a provider).
type Handler struct {
	Config   Config
	Sessions *Sessions
	Logger   *slog.Logger
	// Audit records a sign-in or sign-out with the person's identity.
	Audit func(ctx context.Context, actor, action, summary string) error
	// TokenLogin, if set, lets a person sign in by pasting an API token: it
	// returns the token's actor and role.
	TokenLogin func(ctx context.Context, token string) (actor, role string, err error)

	mu      sync.Mutex
	party   rp.RelyingParty
	pending map[string]pendingLogin
}

// pendingLogin is a sign-in between the redirect to the provider and its way back.
type pendingLogin struct {
	verifier, nonce string
	started         time.Time
}

const (
	// loginTTL bounds how long a person may stay at the provider's login page.
	loginTTL = 10 * time.Minute
	// maxPending bounds sign-ins started and not finished: /ui/login is
	// anonymous, so its state must not grow without limit.
	maxPending = 10000
	// stateCookie binds a sign-in's state to the browser that started it, so
	// that nobody can finish their sign-in in someone else's browser (login CSRF).
	stateCookie = "kiln_login_state"
)

type nonceKey struct{}

// relyingParty reads the provider's discovery document on first use, not at
// start: Kiln provisions machines while the provider is down, and the console
// signs in once it is back.
func (h *Handler) relyingParty(ctx context.Context) (rp.RelyingParty, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.party != nil {
		return h.party, nil
	}
	cfg := h.Config.withDefaults()
	secret, err := cfg.clientSecret()
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	party, err := rp.NewRelyingPartyOIDC(dctx, cfg.Issuer, cfg.ClientID, secret, cfg.RedirectURL, cfg.Scopes,
		rp.WithVerifierOpts(rp.WithNonce(func(ctx context.Context) string {
			n, _ := ctx.Value(nonceKey{}).(string)
			return n
		})))
	if err != nil {
		return nil, fmt.Errorf("oidc provider %s: %w", cfg.Issuer, err)
	}
	h.party = party
	return party, nil
}

func (h *Handler) log() *slog.Logger { return cmp.Or(h.Logger, slog.New(slog.DiscardHandler)) }

// Register mounts the sign-in routes on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui/login", h.login)
	mux.HandleFunc("GET /ui/callback", h.callback)
	mux.HandleFunc("POST /ui/logout", h.logout)
	mux.HandleFunc("GET /ui/session", h.session)
	mux.HandleFunc("POST /ui/login/token", h.tokenLogin)
	mux.HandleFunc("GET /ui/login/cli", h.cliConfig)
	mux.HandleFunc("POST /ui/login/cli", h.cliLogin)
	mux.HandleFunc("POST /ui/logout/cli", h.cliLogout)
}

func secureRequest(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if !h.Config.Enabled() {
		http.Error(w, "single sign-on is not configured (oidc: in kiln.yaml)", http.StatusNotFound)
		return
	}
	party, err := h.relyingParty(r.Context())
	if err != nil {
		h.log().Error("sign-in: provider unavailable", "err", err)
		http.Error(w, "the identity provider cannot be reached; try again later", http.StatusBadGateway)
		return
	}
	state, verifier, nonce := randomToken(), randomToken(), randomToken()
	now := time.Now()
	h.mu.Lock()
	if h.pending == nil {
		h.pending = map[string]pendingLogin{}
	}
	for k, p := range h.pending {
		if now.Sub(p.started) > loginTTL {
			delete(h.pending, k)
		}
	}
	if len(h.pending) >= maxPending {
		h.mu.Unlock()
		http.Error(w, "too many sign-ins in progress; try again in a few minutes", http.StatusServiceUnavailable)
		return
	}
	h.pending[state] = pendingLogin{verifier: verifier, nonce: nonce, started: now}
	h.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: state, Path: "/ui/callback", MaxAge: int(loginTTL / time.Second),
		HttpOnly: true, Secure: secureRequest(r), SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, rp.AuthURL(state, party, rp.WithCodeChallenge(oidc.NewSHACodeChallenge(verifier)),
		rp.AuthURLOpt(rp.WithURLParam("nonce", nonce))), http.StatusFound)
}

// refuse ends a sign-in with a plain page saying why.
func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

func (h *Handler) callback(w http.ResponseWriter, r *http.Request) {
	if !h.Config.Enabled() {
		refuse(w, http.StatusNotFound, "single sign-on is not configured")
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	c, err := r.Cookie(stateCookie)
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Path: "/ui/callback", MaxAge: -1, HttpOnly: true, Secure: secureRequest(r), SameSite: http.SameSiteLaxMode})
	if err != nil || state == "" || c.Value != state {
		refuse(w, http.StatusBadRequest, "sign-in: state does not match this browser's sign-in; start again at /ui/login")
		return
	}
	h.mu.Lock()
	p, ok := h.pending[state]
	delete(h.pending, state)
	h.mu.Unlock()
	if !ok || time.Since(p.started) > loginTTL {
		refuse(w, http.StatusBadRequest, "sign-in: expired or already used; start again at /ui/login")
		return
	}
	if e := q.Get("error"); e != "" {
		refuse(w, http.StatusUnauthorized, "sign-in refused by the identity provider: "+safetext.Field(e+" "+q.Get("error_description"), 200))
		return
	}
	party, err := h.relyingParty(r.Context())
	if err != nil {
		refuse(w, http.StatusBadGateway, "the identity provider cannot be reached; try again later")
		return
	}
	ctx := context.WithValue(r.Context(), nonceKey{}, p.nonce)
	tokens, err := rp.CodeExchange[*oidc.IDTokenClaims](ctx, q.Get("code"), party, rp.WithCodeVerifier(p.verifier))
	if err != nil {
		h.log().Warn("sign-in: code exchange failed", "err", err)
		refuse(w, http.StatusUnauthorized, "sign-in failed: the provider's answer did not verify")
		return
	}
	claims := tokens.IDTokenClaims
	all := claims.Claims
	cfg := h.Config.withDefaults()
	_, hasGroups := all[cfg.RoleClaim]
	if (!hasGroups || !bool(claims.EmailVerified)) && tokens.AccessToken != "" {
		// Providers that keep groups and email out of the ID token (to keep it
		// small) give them at the userinfo endpoint; rp.Userinfo checks that it
		// speaks of the ID token's subject.
		info, err := rp.Userinfo[*oidc.UserInfo](ctx, tokens.AccessToken, tokens.TokenType, claims.Subject, party)
		if err == nil {
			if !hasGroups {
				all = info.Claims
			}
			if !bool(claims.EmailVerified) && bool(info.EmailVerified) {
				claims.Email, claims.EmailVerified = info.Email, true
			}
			claims.Name = cmp.Or(claims.Name, info.Name)
		} else {
			h.log().Warn("sign-in: userinfo", "err", err)
		}
	}
	who := identity(claims)
	role, err := h.Config.RoleFor(all)
	if err != nil {
		h.log().Warn("sign-in refused", "actor", who.Actor, "err", err)
		h.audit(r.Context(), who.Actor, "login-refused", "single sign-on: "+err.Error())
		refuse(w, http.StatusForbidden, "sign-in refused: "+err.Error()+" (ask an administrator to map your group in oidc.roles)")
		return
	}
	who.Role = role
	h.startSession(w, r, who, "single sign-on")
}

// identity is who the ID token names; the actor prefers the email, which an
// auditor recognizes, and falls back to the subject, which never changes.
func identity(c *oidc.IDTokenClaims) Session {
	email := ""
	if c.EmailVerified {
		email = safetext.Field(c.Email, 254)
	}
	sub := safetext.Field(c.Subject, 255)
	return Session{
		Actor:   "user:" + cmp.Or(email, sub),
		Subject: sub,
		Email:   email,
		Name:    safetext.Field(c.Name, 200),
	}
}

func (h *Handler) startSession(w http.ResponseWriter, r *http.Request, who Session, how string) {
	id, sess := h.Sessions.Create(who)
	setCookie(w, secureRequest(r), id, sess.Expires)
	h.log().Info("signed in", "actor", sess.Actor, "role", sess.Role, "via", how)
	h.audit(r.Context(), sess.Actor, "login", fmt.Sprintf("console sign-in by %s, role %s", how, sess.Role))
	if r.Method == http.MethodGet {
		http.Redirect(w, r, "/ui/", http.StatusFound)
		return
	}
	writeJSON(w, http.StatusOK, sess)
}

func (h *Handler) audit(ctx context.Context, actor, action, summary string) {
	if h.Audit == nil {
		return
	}
	if err := h.Audit(ctx, actor, action, summary); err != nil {
		h.log().Error("audit sign-in", "actor", actor, "action", action, "err", err)
	}
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	sess, err := h.Sessions.Authenticate(r)
	if errors.Is(err, ErrForged) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
		return
	}
	setCookie(w, secureRequest(r), "", time.Time{})
	if err == nil {
		h.Sessions.Revoke(sessionID(r))
		h.log().Info("signed out", "actor", sess.Actor)
		h.audit(r.Context(), sess.Actor, "logout", "console sign-out")
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "signed out"})
}

// SessionStatus is /ui/session's answer without a session: how one may sign in.
type SessionStatus struct {
	SSO        bool `json:"sso"`
	TokenLogin bool `json:"tokenLogin"`
}

func (h *Handler) session(w http.ResponseWriter, r *http.Request) {
	sess, err := h.Sessions.Authenticate(r)
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, SessionStatus{SSO: h.Config.Enabled(), TokenLogin: h.TokenLogin != nil})
		return
	}
	writeJSON(w, http.StatusOK, sess)
}

// tokenLogin signs in with an API token sent once in a form field; the session
// then carries the token's actor and role, and the token stays out of the
// browser's storage.
func (h *Handler) tokenLogin(w http.ResponseWriter, r *http.Request) {
	if h.TokenLogin == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "sign-in with an API token is off"})
		return
	}
	if !sameOrigin(r) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "sign-in from another site refused"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	if tok == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "token: required"})
		return
	}
	actor, role, err := h.TokenLogin(r.Context(), tok)
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "token: invalid or revoked API token"})
		return
	}
	h.startSession(w, r, Session{Actor: actor, Subject: actor, Role: role}, "API token")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
