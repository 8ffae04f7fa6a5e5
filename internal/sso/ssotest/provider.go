// Package ssotest starts a real OpenID provider for tests: zitadel/oidc's op
// package (the provider package ZITADEL's own server is built on) with its
// example in-memory storage, a login form, and a few people whose groups map to
// Kiln's roles. Tests sign in through it the way a browser does; nothing here
// mints a token by hand.
package ssotest

import (
	"context"
	"crypto/sha256"
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// Password is every test person's password.
const Password = "correct horse battery staple"

// People: their username (also the local part of their verified email) and groups.
var People = map[string][]string{
	"alice":   {"kiln-admins", "staff"},
	"olga":    {"kiln-operators"},
	"victor":  {"kiln-viewers"},
	"mallory": {"sales"}, // in no group Kiln maps: refused
}

// Groups map Kiln's roles to the groups above, as kiln.yaml's oidc.roles would.
var Groups = map[string][]string{
	"admin":    {"kiln-admins"},
	"operator": {"kiln-operators"},
	"viewer":   {"kiln-viewers"},
}

// Email is the verified email the provider gives a person.
func Email(username string) string { return username + "@example.test" }

// Provider is a running OpenID provider on loopback.
type Provider struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	// CLIClientID is a public (native) client for `kiln login`: PKCE, a
	// loopback redirect on any port (RFC 8252).
	CLIClientID string

	mu        sync.Mutex
	redirects []string
}

// AllowRedirect registers a redirect URI of the client (Kiln's /ui/callback,
// known once Kiln listens).
func (p *Provider) AllowRedirect(uri string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.redirects = append(p.redirects, uri)
}

// registeredClient is the example's web client with redirect URIs that can be
// added after the provider started.
type registeredClient struct {
	*storage.Client
	p *Provider
}

func (c registeredClient) RedirectURIs() []string {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	return slices.Clone(c.p.redirects)
}

type people struct{}

func (people) GetUserByID(id string) *storage.User { return people{}.GetUserByUsername(id) }
func (people) GetUserByUsername(name string) *storage.User {
	if _, ok := People[name]; !ok {
		return nil
	}
	return &storage.User{ID: name, Username: name, Password: Password, FirstName: name, LastName: "Test",
		Email: Email(name), EmailVerified: true, PreferredLanguage: language.English}
}
func (people) ExampleClientID() string { return "service" }

// groupStorage is the example storage with a groups claim added to the ID token
// and to userinfo, as Dex, Keycloak or Entra add theirs.
type groupStorage struct {
	*storage.Storage
	client registeredClient
}

func (s groupStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	if id == s.client.GetID() {
		return s.client, nil
	}
	return s.Storage.GetClientByClientID(ctx, id)
}

func addGroups(info *oidc.UserInfo, user string) {
	if g, ok := People[user]; ok {
		info.AppendClaims("groups", g)
	}
}

func (s groupStorage) SetUserinfoFromScopes(ctx context.Context, info *oidc.UserInfo, userID, clientID string, scopes []string) error {
	addGroups(info, userID)
	return s.Storage.SetUserinfoFromScopes(ctx, info, userID, clientID, scopes)
}

func (s groupStorage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, token op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, token, scopes); err != nil {
		return err
	}
	addGroups(info, token.GetSubject())
	return nil
}

func (s groupStorage) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, info, tokenID, subject, origin); err != nil {
		return err
	}
	addGroups(info, info.Subject)
	return nil
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><title>Test provider sign-in</title></head><body>
<h1>Test identity provider</h1>
<form method="post" action="/login/username">
<input type="hidden" name="id" value="{{.ID}}">
<label>Username <input id="username" name="username" autofocus></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="submit" type="submit">Sign in</button>
</form>{{if .Error}}<p id="error">{{.Error}}</p>{{end}}
</body></html>`))

// Start runs a provider on 127.0.0.1 until the test ends, with one confidential
// web client (AllowRedirect registers its redirect URIs).
func Start(t testing.TB) *Provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Provider{Issuer: "http://" + ln.Addr().String(), ClientID: "kiln-console", ClientSecret: "test-client-secret", CLIClientID: "kiln-cli"}
	client := storage.WebClient(p.ClientID, p.ClientSecret, "http://127.0.0.1/unused")
	st := groupStorage{storage.NewStorageWithClients(people{}, map[string]*storage.Client{
		p.ClientID: client, p.CLIClientID: storage.NativeClient(p.CLIClientID, "http://127.0.0.1/callback")}), registeredClient{client, p}}
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:      sha256.Sum256([]byte("ssotest")),
		CodeMethodS256: true,
		AuthMethodPost: true,
	}, st, op.StaticIssuer(p.Issuer), op.WithAllowInsecure(), op.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		ln.Close()
		t.Fatalf("start the OpenID provider: %v", err)
	}
	callback := op.AuthCallbackURL(provider)
	interceptor := op.NewIssuerInterceptor(provider.IssuerFromRequest)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login/username", func(w http.ResponseWriter, r *http.Request) {
		loginPage.Execute(w, map[string]string{"ID": r.FormValue("authRequestID")})
	})
	mux.Handle("POST /login/username", interceptor.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.FormValue("id")
		if err := st.CheckUsernamePassword(r.FormValue("username"), r.FormValue("password"), id); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			loginPage.Execute(w, map[string]string{"ID": id, "Error": err.Error()})
			return
		}
		http.Redirect(w, r, callback(r.Context(), id), http.StatusFound)
	}))
	mux.Handle("/", provider)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Logf("stop the OpenID provider: %v", err)
		}
	})
	return p
}

// SecretFile writes the client secret to a file in dir (oidc.clientSecretFile).
func (p *Provider) SecretFile(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "oidc-client-secret")
	if err := os.WriteFile(path, []byte(p.ClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
