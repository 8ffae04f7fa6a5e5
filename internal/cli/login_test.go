package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/server"
	"github.com/kilnhq/kiln/internal/sso"
	"github.com/kilnhq/kiln/internal/sso/ssotest"
)

// urlWatcher is kiln login's stderr: it hands the sign-in URL to the test's
// "browser" as soon as it is printed.
type urlWatcher struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	urls chan string
	sent bool
}

var signInURL = regexp.MustCompile(`https?://\S+/authorize\S*`)

func (w *urlWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if m := signInURL.FindString(w.buf.String()); m != "" && !w.sent {
		w.sent = true
		w.urls <- m
	}
	return len(p), nil
}

// signInAt plays the person at the browser: the provider's form, then the
// redirect to kiln login's loopback listener.
func signInAt(t *testing.T, authURL, user string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="id" value="([^"]+)"`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("no login form at the provider: %s", page)
	}
	resp, err = c.PostForm(resp.Request.URL.String(), url.Values{"id": {string(m[1])}, "username": {user}, "password": {ssotest.Password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestKilnLogin: kiln login signs a person in through a real OpenID provider
// (PKCE, loopback redirect), keeps the session token in the user's config dir,
// and later commands act as that person with the role their groups give;
// someone in no mapped group gets no token.
func TestKilnLogin(t *testing.T) {
	for _, k := range []string{"KILN_SERVER", "KILN_TOKEN", "KILN_DATA_DIR"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	p := ssotest.Start(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", HTTPSListen: "", OIDC: sso.Config{
		Issuer: p.Issuer, ClientID: p.ClientID, ClientSecretFile: p.SecretFile(t, t.TempDir()), CLIClientID: p.CLIClientID,
		RedirectURL: "http://127.0.0.1:1/ui/callback", Roles: ssotest.Groups}}, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	base := "http://" + srv.Addr().String()
	global := []string{"--server", base, "--data-dir", t.TempDir()}

	login := func(user string) (string, error) {
		w := &urlWatcher{urls: make(chan string, 1)}
		var out bytes.Buffer
		root := NewRoot(&out, w)
		root.SetArgs(append(global, "login", "--wait", "30s"))
		errc := make(chan error, 1)
		go func() { errc <- root.ExecuteContext(context.Background()) }()
		select {
		case u := <-w.urls:
			signInAt(t, u, user)
		case err := <-errc:
			t.Fatalf("kiln login ended before printing a URL: %v (%s)", err, w.buf.String())
		case <-time.After(20 * time.Second):
			t.Fatalf("kiln login printed no URL: %s", w.buf.String())
		}
		select {
		case err := <-errc:
			return out.String(), err
		case <-time.After(30 * time.Second):
			t.Fatal("kiln login did not finish")
		}
		return "", nil
	}

	if _, err := login("mallory"); err == nil || !strings.Contains(err.Error(), "none of your groups") {
		t.Errorf("login as someone in no mapped group: %v, want refused", err)
	}
	if tok := loginToken(base, time.Now()); tok != "" {
		t.Error("a refused login left a token")
	}
	out, err := login("olga")
	if err != nil || !strings.Contains(out, "as user:olga@example.test (role operator)") {
		t.Fatalf("login as olga: %v %q", err, out)
	}
	tok := loginToken(base, time.Now())
	if !strings.HasPrefix(tok, sso.BearerPrefix) {
		t.Fatalf("credentials hold %q", tok)
	}
	if fi, err := os.Stat(os.Getenv("XDG_CONFIG_HOME") + "/kiln/credentials"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials file: %v %v, want mode 0600", fi, err)
	}
	// Commands now act as olga: an apply is audited under her name.
	manifest := t.TempDir() + "/m.yaml"
	os.WriteFile(manifest, []byte("kind: Machine\nmetadata: {name: by-olga}\nspec: {interfaces: [{mac: \"52:54:00:00:00:77\"}]}\n"), 0o600)
	if _, errOut, err := runKiln(t, append(global, "apply", "-f", manifest)...); err != nil {
		t.Fatalf("apply as olga: %v %s", err, errOut)
	}
	auditOut, _, err := runKiln(t, append(global, "audit", "list", "-o", "json")...)
	if err != nil {
		t.Fatalf("kiln audit: %v", err)
	}
	if !strings.Contains(auditOut, `"actor": "user:olga@example.test"`) || !strings.Contains(auditOut, "by-olga") {
		t.Errorf("the apply is not audited under olga: %.2000s", auditOut)
	}
	// An operator may not list API tokens (admin): the session carries her role.
	req, _ := http.NewRequest("GET", base+"/api/v1/apitokens", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("operator's session token on an admin route: %d, want 403", resp.StatusCode)
	}
	// A made-up session token is refused, not taken for an API token.
	req.Header.Set("Authorization", "Bearer "+sso.BearerPrefix+"made-up")
	resp, _ = http.DefaultClient.Do(req)
	var e map[string]any
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a made-up session token: %d %v", resp.StatusCode, e)
	}

	// kiln logout ends the session on the server and forgets the token.
	out, errOut, err := runKiln(t, append(global, "logout")...)
	if err != nil || !strings.Contains(out, "Signed out of "+base+" (user:olga@example.test); the session is ended on the server") {
		t.Fatalf("kiln logout: %v %q %q", err, out, errOut)
	}
	if got := loginToken(base, time.Now()); got != "" {
		t.Error("kiln logout left the token in the credentials file")
	}
	req, _ = http.NewRequest("GET", base+"/api/v1/machines", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the signed-out session token still reads machines: %d, want 401", resp.StatusCode)
	}
	auditOut, _, err = runKiln(t, "--server", base, "--data-dir", dir, "audit", "list", "-o", "json")
	if err != nil {
		t.Fatalf("kiln audit as admin: %v", err)
	}
	if !strings.Contains(auditOut, `"action": "logout"`) || !strings.Contains(auditOut, "CLI sign-out") {
		t.Errorf("the sign-out is not audited: %.3000s", auditOut)
	}
	if out, _, err := runKiln(t, append(global, "logout")...); err != nil || !strings.Contains(out, "Not signed in") {
		t.Errorf("kiln logout without a session: %v %q", err, out)
	}
	// The route ends only sessions named by their own token.
	resp, err = http.Post(base+"/ui/logout/cli", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("logout without a session token: %d, want 400", resp.StatusCode)
	}
	// A made-up session token (anyone may send one) ends nothing and writes nothing.
	req, _ = http.NewRequest("POST", base+"/ui/logout/cli", nil)
	req.Header.Set("Authorization", "Bearer "+sso.BearerPrefix+strings.Repeat("x", 4096))
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	after, _, err := runKiln(t, "--server", base, "--data-dir", dir, "audit", "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || strings.Count(after, `"action": "logout"`) != strings.Count(auditOut, `"action": "logout"`) {
		t.Errorf("logout with a made-up token: %d, logout audit entries %d before, %d after", resp.StatusCode,
			strings.Count(auditOut, `"action": "logout"`), strings.Count(after, `"action": "logout"`))
	}
}
