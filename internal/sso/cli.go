package sso

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// BearerPrefix starts a session token `kiln login` holds: the CLI sends it as a
// bearer token, so it needs no CSRF token (a browser never sends it on its own).
const BearerPrefix = "kilnsess_"

// CLIConfig is what `kiln login` needs to know about the provider.
type CLIConfig struct {
	Issuer   string   `json:"issuer"`
	ClientID string   `json:"clientID"`
	Scopes   []string `json:"scopes"`
}

// CLILoginRequest carries what the CLI got from the provider (authorization code
// flow with PKCE on a loopback redirect, RFC 8252).
type CLILoginRequest struct {
	IDToken     string `json:"idToken"`
	AccessToken string `json:"accessToken,omitempty"`
	Nonce       string `json:"nonce"`
}

// CLILoginResponse is the session token the CLI keeps.
type CLILoginResponse struct {
	Token   string    `json:"token"`
	Actor   string    `json:"actor"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
}

func (h *Handler) cliConfig(w http.ResponseWriter, r *http.Request) {
	if !h.Config.Enabled() {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "single sign-on is not configured on this server (oidc: in kiln.yaml); use an API token"})
		return
	}
	cfg := h.Config.withDefaults()
	writeJSON(w, http.StatusOK, CLIConfig{Issuer: cfg.Issuer, ClientID: cfg.CLIClientID, Scopes: cfg.Scopes})
}

// cliLogin turns an ID token the provider issued to Kiln's CLI client into a
// session: the token must verify (signature by the provider's keys, issuer,
// audience the CLI client, not expired, the nonce the CLI chose), and the
// person's groups must map to a role, exactly as for the console.
func (h *Handler) cliLogin(w http.ResponseWriter, r *http.Request) {
	if !h.Config.Enabled() {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "single sign-on is not configured on this server"})
		return
	}
	var req CLILoginRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "malformed JSON: " + err.Error()})
		return
	}
	if req.IDToken == "" || req.Nonce == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "idToken and nonce: required"})
		return
	}
	party, err := h.relyingParty(r.Context())
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "the identity provider cannot be reached"})
		return
	}
	cfg := h.Config.withDefaults()
	verifier := rp.NewIDTokenVerifier(cfg.Issuer, cfg.CLIClientID, party.IDTokenVerifier().KeySet,
		rp.WithNonce(func(context.Context) string { return req.Nonce }))
	claims, err := rp.VerifyIDToken[*oidc.IDTokenClaims](r.Context(), req.IDToken, verifier)
	if err != nil {
		h.log().Warn("CLI sign-in: ID token refused", "err", err)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "the ID token did not verify for Kiln's CLI client"})
		return
	}
	all := claims.Claims
	if _, ok := all[cfg.RoleClaim]; (!ok || !bool(claims.EmailVerified)) && req.AccessToken != "" {
		if info, err := rp.Userinfo[*oidc.UserInfo](r.Context(), req.AccessToken, oidc.BearerToken, claims.Subject, party); err == nil {
			if !ok {
				all = info.Claims
			}
			if !bool(claims.EmailVerified) && bool(info.EmailVerified) {
				claims.Email, claims.EmailVerified = info.Email, true
			}
		}
	}
	who := identity(claims)
	role, err := h.Config.RoleFor(all)
	if err != nil {
		h.audit(r.Context(), who.Actor, "login-refused", "CLI single sign-on: "+err.Error())
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "sign-in refused: " + err.Error()})
		return
	}
	who.Role = role
	id, sess := h.Sessions.Create(who)
	h.log().Info("signed in", "actor", sess.Actor, "role", sess.Role, "via", "kiln login")
	h.audit(r.Context(), sess.Actor, "login", "CLI sign-in by single sign-on, role "+sess.Role)
	writeJSON(w, http.StatusOK, CLILoginResponse{Token: BearerPrefix + id, Actor: sess.Actor, Role: sess.Role, Expires: sess.Expires})
}

// Bearer returns the session a `kiln login` token names.
func (s *Sessions) Bearer(token string) (*Session, error) {
	id, ok := strings.CutPrefix(token, BearerPrefix)
	if !ok || id == "" {
		return nil, ErrNoSession
	}
	sess, ok := s.lookup(id)
	if !ok {
		return nil, ErrSessionInvalid
	}
	return sess, nil
}

// cliLogout ends the session a `kiln login` token names (kiln logout): the
// token, sent as a bearer token, stops working at once on this server. An
// unknown or expired token is answered like a known one (nothing to end).
func (h *Handler) cliLogout(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !strings.HasPrefix(tok, BearerPrefix) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "Authorization: want the Bearer token kiln login keeps"})
		return
	}
	if sess, ok := h.Sessions.Revoke(strings.TrimPrefix(tok, BearerPrefix)); ok {
		h.log().Info("signed out", "actor", sess.Actor, "via", "kiln logout")
		h.audit(r.Context(), sess.Actor, "logout", "CLI sign-out")
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "signed out"})
}
