package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/apitoken"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/sso"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/ui"
)

// consoleSessions lets the operator API accept the console's session cookie.
type consoleSessions struct{ sessions *sso.Sessions }

func (c consoleSessions) SessionActor(r *http.Request) (inventory.Actor, bool, error) {
	sess, err := c.sessions.Authenticate(r)
	switch {
	case errors.Is(err, sso.ErrNoSession):
		return inventory.Actor{}, false, nil
	case errors.Is(err, sso.ErrForged):
		return inventory.Actor{}, true, api.ErrCrossSite
	case err != nil:
		return inventory.Actor{}, true, err
	}
	return inventory.Actor{ID: sess.Actor, Role: sess.Role}, true, nil
}

func (c consoleSessions) BearerActor(token string) (inventory.Actor, bool, error) {
	sess, err := c.sessions.Bearer(token)
	switch {
	case errors.Is(err, sso.ErrNoSession):
		return inventory.Actor{}, false, nil
	case err != nil:
		return inventory.Actor{}, true, err
	}
	return inventory.Actor{ID: sess.Actor, Role: sess.Role}, true, nil
}

// mountConsole serves the web console and its sign-in under /ui/ on the operator
// API's mux, and lets the API accept console sessions.
func (s *Server) mountConsole(apiMux *http.ServeMux, a *api.Server) error {
	console, err := ui.New()
	if err != nil {
		return err
	}
	sessions := &sso.Sessions{TTL: s.cfg.OIDC.SessionTTL}
	a.Sessions = consoleSessions{sessions}
	signIn := &sso.Handler{
		Config:   s.cfg.OIDC,
		Sessions: sessions,
		Logger:   s.log,
		Audit:    s.auditSignIn,
		TokenLogin: func(ctx context.Context, token string) (string, string, error) {
			tok, err := apitoken.Authenticate(ctx, s.store, token)
			if err != nil {
				return "", "", err
			}
			return "token:" + tok.ID, tok.Role, nil
		},
	}
	uiMux := http.NewServeMux()
	console.Register(uiMux)
	signIn.Register(uiMux)
	apiMux.Handle("/ui/", ui.SecurityHeaders(uiMux))
	return nil
}

// auditSignIn records a console sign-in, refusal or sign-out under the person.
func (s *Server) auditSignIn(ctx context.Context, actor, action, summary string) error {
	err := s.store.Update(ctx, func(tx store.Tx) error {
		return tx.AppendAudit(ctx, &audit.Entry{Time: time.Now().UTC(), Actor: actor, Action: action,
			Kind: "Session", Name: actor, Summary: summary})
	})
	if err != nil {
		return fmt.Errorf("audit %s of %s: %w", action, actor, err)
	}
	return nil
}
