package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/kilnhq/kiln/internal/atomicfile"
	"github.com/kilnhq/kiln/internal/sso"
)

// CredentialsFile holds `kiln login` session tokens by server URL, in the user's
// config dir beside known_servers (mode 0600).
const CredentialsFile = "credentials"

// credentials are the session tokens `kiln login` got, by server base URL.
type credentials map[string]credential

type credential struct {
	Token   string    `json:"token"`
	Actor   string    `json:"actor"`
	Expires time.Time `json:"expires"`
}

func credentialsPath() (string, error) {
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the config dir for kiln login's credentials: %w", err)
	}
	return filepath.Join(d, "kiln", CredentialsFile), nil
}

func readCredentials() (credentials, string, error) {
	path, err := credentialsPath()
	if err != nil {
		return nil, "", err
	}
	creds := credentials{}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return creds, path, nil
	}
	if err != nil {
		return nil, path, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &creds); err != nil {
		return nil, path, fmt.Errorf("read %s: not kiln login's JSON (delete it and log in again): %w", path, err)
	}
	return creds, path, nil
}

// loginToken is the unexpired `kiln login` token for a server, "" if none.
func loginToken(base string, now time.Time) string {
	creds, _, err := readCredentials()
	if err != nil {
		return ""
	}
	if c, ok := creds[base]; ok && now.Before(c.Expires) {
		return c.Token
	}
	return ""
}

func newLoginCmd(g *globalFlags) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Sign in with the server's single sign-on; later commands act as you",
		Long: `Sign in through the identity provider the server is configured with (oidc: in
kiln.yaml): kiln login prints a URL to open in a browser, receives the provider's
answer on a loopback address (authorization code flow with PKCE, RFC 8252), and
keeps the server's session token in <user config dir>/kiln/credentials (mode 0600).
Commands to that server then act as you, with the role your groups give, until the
session ends (oidc.sessionTTL, or a server restart). --token and KILN_TOKEN still win.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmdContext(cmd), wait)
			defer cancel()
			var cfg sso.CLIConfig
			if err := c.do(ctx, "GET", "/ui/login/cli", nil, nil, &cfg); err != nil {
				return err
			}
			tokens, nonce, err := loopbackSignIn(ctx, cfg, func(u string) {
				fmt.Fprintf(cmd.ErrOrStderr(), "Open this URL in a browser to sign in:\n\n  %s\n\nWaiting for the identity provider (up to %s)...\n", u, wait)
			})
			if err != nil {
				return err
			}
			var out sso.CLILoginResponse
			if err := c.do(ctx, "POST", "/ui/login/cli", nil, sso.CLILoginRequest{IDToken: tokens.IDToken, AccessToken: tokens.AccessToken, Nonce: nonce}, &out); err != nil {
				return err
			}
			creds, path, err := readCredentials()
			if err != nil {
				return err
			}
			creds[c.base] = credential{Token: out.Token, Actor: out.Actor, Expires: out.Expires}
			b, _ := json.MarshalIndent(creds, "", "  ")
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return fmt.Errorf("save the session token: %w", err)
			}
			if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
				return fmt.Errorf("save the session token in %s: %w", path, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Signed in to %s as %s (role %s) until %s\n", c.base, out.Actor, out.Role, out.Expires.Local().Format(time.DateTime))
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Minute, "how long to wait for the sign-in in the browser")
	return cmd
}

// loopbackSignIn runs the authorization code flow with PKCE against the provider,
// receiving the code on 127.0.0.1 at a port chosen now (RFC 8252 section 7.3).
func loopbackSignIn(ctx context.Context, cfg sso.CLIConfig, show func(url string)) (*oidc.Tokens[*oidc.IDTokenClaims], string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("listen for the sign-in's answer: %w", err)
	}
	defer ln.Close()
	redirect := "http://" + ln.Addr().String() + "/callback"
	nonce, state, verifier := rand32(), rand32(), rand32()
	party, err := rp.NewRelyingPartyOIDC(ctx, cfg.Issuer, cfg.ClientID, "", redirect, cfg.Scopes,
		rp.WithVerifierOpts(rp.WithNonce(func(context.Context) string { return nonce })))
	if err != nil {
		return nil, "", fmt.Errorf("identity provider %s: %w", cfg.Issuer, err)
	}
	type result struct {
		tokens *oidc.Tokens[*oidc.IDTokenClaims]
		err    error
	}
	done := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("state") != state:
			http.Error(w, "sign-in: state does not match; run kiln login again", http.StatusBadRequest)
			return // not ours: keep waiting for the real answer
		case q.Get("error") != "":
			res.err = fmt.Errorf("the identity provider refused: %s %s", q.Get("error"), q.Get("error_description"))
		default:
			res.tokens, res.err = rp.CodeExchange[*oidc.IDTokenClaims](r.Context(), q.Get("code"), party, rp.WithCodeVerifier(verifier))
		}
		if res.err != nil {
			http.Error(w, "Sign-in failed; see the terminal.", http.StatusUnauthorized)
		} else {
			fmt.Fprintln(w, "Signed in to Kiln. You can close this tab.")
		}
		select {
		case done <- res:
		default:
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	show(rp.AuthURL(state, party, rp.WithCodeChallenge(oidc.NewSHACodeChallenge(verifier)), rp.AuthURLOpt(rp.WithURLParam("nonce", nonce))))
	select {
	case res := <-done:
		if res.err != nil {
			return nil, "", fmt.Errorf("sign-in: %w", res.err)
		}
		return res.tokens, nonce, nil
	case <-ctx.Done():
		return nil, "", fmt.Errorf("sign-in: no answer from the browser: %w", ctx.Err())
	}
}

// rand32 is 32 random bytes, base64url: a state, nonce or PKCE verifier.
func rand32() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func newLogoutCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Sign out: end the kiln login session on the server and forget its token",
		Long: `End the session kiln login opened on the server (its token stops working at once)
and remove the token from <user config dir>/kiln/credentials. The token is removed
even when the server cannot be reached (the session then ends at its expiry or at
the server's restart); kiln logout says so. API tokens (--token, KILN_TOKEN) are
not affected: revoke those with kiln token revoke.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			creds, path, err := readCredentials()
			if err != nil {
				return err
			}
			cred, ok := creds[c.base]
			if !ok {
				fmt.Fprintf(cmd.OutOrStdout(), "Not signed in to %s (no kiln login session)\n", c.base)
				return nil
			}
			ended := "the session is ended on the server"
			sc := *c
			sc.token = cred.Token
			if err := sc.do(cmdContext(cmd), "POST", "/ui/logout/cli", nil, nil, nil); err != nil {
				ended = fmt.Sprintf("the server did not confirm (%v): the session ends at its expiry, %s, or when the server restarts", err, cred.Expires.Local().Format(time.DateTime))
			}
			delete(creds, c.base)
			b, _ := json.MarshalIndent(creds, "", "  ")
			if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
				return fmt.Errorf("remove the session token from %s: %w", path, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Signed out of %s (%s); %s\n", c.base, cred.Actor, ended)
			return nil
		},
	}
}
