package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/sso"
	"github.com/kilnhq/kiln/internal/sso/ssotest"
	"github.com/kilnhq/kiln/internal/ui"
)

// ssoKiln is Kiln serving on loopback with single sign-on through a real OpenID
// provider started for the test.
type ssoKiln struct {
	srv      *Server
	url      string
	provider *ssotest.Provider
}

func newSSOKiln(t *testing.T) *ssoKiln {
	t.Helper()
	p := ssotest.Start(t)
	// Bound before Kiln is configured, so that the redirect URL is known.
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()
	p.AllowRedirect(base + "/ui/callback")
	s := newTestServerWith(t, Config{OIDC: sso.Config{
		Issuer: p.Issuer, ClientID: p.ClientID, ClientSecretFile: p.SecretFile(t, t.TempDir()),
		RedirectURL: base + "/ui/callback", Roles: ssotest.Groups,
	}})
	ts.Config.Handler = s.http.Handler
	ts.Start()
	t.Cleanup(ts.Close)
	return &ssoKiln{srv: s, url: base, provider: p}
}

// browser is what a browser keeps between requests: cookies.
type browser struct {
	t      *testing.T
	client *http.Client
	kiln   string
}

func newBrowser(t *testing.T, kiln string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, client: &http.Client{Jar: jar}, kiln: kiln}
}

var authRequestID = regexp.MustCompile(`name="id" value="([^"]+)"`)

// signIn goes through /ui/login, the provider's form and back; it returns the
// last response (Kiln's console page, or Kiln's refusal).
func (b *browser) signIn(user string) (int, string) {
	b.t.Helper()
	resp, err := b.client.Get(b.kiln + "/ui/login")
	if err != nil {
		b.t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := authRequestID.FindSubmatch(page)
	if m == nil {
		b.t.Fatalf("no login form at the provider (%d): %s", resp.StatusCode, page)
	}
	resp, err = b.client.PostForm(resp.Request.URL.String(), url.Values{"id": {string(m[1])}, "username": {user}, "password": {ssotest.Password}})
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browser) session() (sso.Session, int) {
	b.t.Helper()
	var s sso.Session
	code := b.do("GET", "/ui/session", "", nil, &s)
	return s, code
}

// do sends a request with the browser's cookies; headers are extra headers.
func (b *browser) do(method, path, body string, headers map[string]string, out any) int {
	b.t.Helper()
	req, _ := http.NewRequest(method, b.kiln+path, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// TestConsoleSignInMapsGroupsToRoles signs each test person in through the
// provider: their groups give their role, the API sees the person (not a token),
// and someone in no mapped group is refused and gets no session.
func TestConsoleSignInMapsGroupsToRoles(t *testing.T) {
	k := newSSOKiln(t)
	for user, want := range map[string]string{"alice": "admin", "olga": "operator", "victor": "viewer", "mallory": ""} {
		b := newBrowser(t, k.url)
		code, body := b.signIn(user)
		sess, scode := b.session()
		if want == "" {
			if code != http.StatusForbidden || !strings.Contains(body, "none of your groups") {
				t.Errorf("%s: sign-in %d %q, want 403 naming the groups", user, code, body)
			}
			if scode != http.StatusUnauthorized {
				t.Errorf("%s: refused but /ui/session answers %d", user, scode)
			}
			continue
		}
		if code != http.StatusOK || !strings.Contains(body, "<!doctype html>") {
			t.Fatalf("%s: sign-in ended with %d: %.300s", user, code, body)
		}
		if sess.Role != want || sess.Actor != "user:"+ssotest.Email(user) || sess.CSRF == "" {
			t.Errorf("%s: session %+v, want role %s, actor user:%s and a CSRF token", user, sess, want, ssotest.Email(user))
		}
		var who map[string]string
		if code := b.do("GET", "/api/v1/whoami", "", nil, &who); code != 200 || who["id"] != sess.Actor || who["role"] != want {
			t.Errorf("%s: whoami %d %v", user, code, who)
		}
	}
	var logins, refused []string
	for _, e := range auditEntries(t, k.srv.store) {
		switch e.Action {
		case "login":
			logins = append(logins, e.Actor)
		case "login-refused":
			refused = append(refused, e.Actor)
		}
	}
	slices.Sort(logins)
	if want := []string{"user:alice@example.test", "user:olga@example.test", "user:victor@example.test"}; !slices.Equal(logins, want) {
		t.Errorf("audited sign-ins %v, want %v", logins, want)
	}
	if !slices.Equal(refused, []string{"user:mallory@example.test"}) {
		t.Errorf("audited refusals %v", refused)
	}
}

const testMachine = `{"apiVersion":"kiln.dev/v1","kind":"Machine","metadata":{"name":"%s"},"spec":{"interfaces":[{"mac":"52:54:00:00:00:%s"}]}}`

func machineJSON(name, macByte string) string {
	return strings.NewReplacer("%s", name).Replace(strings.Replace(testMachine, "00:%s", "00:"+macByte, 1))
}

// TestConsoleSessionWrites: a write with the session cookie needs the session's
// CSRF token and a same-origin request, the role still applies, the audit names
// the person, and sign-out revokes the session on the server.
func TestConsoleSessionWrites(t *testing.T) {
	k := newSSOKiln(t)
	op := newBrowser(t, k.url)
	if code, body := op.signIn("olga"); code != 200 {
		t.Fatalf("sign-in: %d %s", code, body)
	}
	sess, _ := op.session()
	csrf := map[string]string{sso.CSRFHeader: sess.CSRF, "Origin": k.url}
	cases := []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"no CSRF token", map[string]string{"Origin": k.url}, http.StatusForbidden},
		{"wrong CSRF token", map[string]string{sso.CSRFHeader: "x" + sess.CSRF, "Origin": k.url}, http.StatusForbidden},
		{"another origin", map[string]string{sso.CSRFHeader: sess.CSRF, "Origin": "http://evil.example"}, http.StatusForbidden},
		{"cross-site fetch", map[string]string{sso.CSRFHeader: sess.CSRF, "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
	}
	for i, c := range cases {
		name := "forged-" + string(rune('a'+i))
		if code := op.do("POST", "/api/v1/machines", machineJSON(name, "1"+string(rune('0'+i))), c.headers, nil); code != c.want {
			t.Errorf("%s: %d, want %d", c.name, code, c.want)
		}
		var obj map[string]any
		if code := op.do("GET", "/api/v1/machines/"+name, "", nil, &obj); code != http.StatusNotFound {
			t.Errorf("%s: the refused write created the machine (%d)", c.name, code)
		}
	}
	if code := op.do("POST", "/api/v1/machines", machineJSON("web-1", "21"), csrf, nil); code != http.StatusCreated {
		t.Fatalf("operator's write with the CSRF token: %d", code)
	}
	var last audit.Entry
	for _, e := range auditEntries(t, k.srv.store) {
		if e.Kind == "Machine" && e.Name == "web-1" {
			last = e
		}
	}
	if last.Actor != "user:olga@example.test" {
		t.Errorf("the machine's audit entry names %q, want the person", last.Actor)
	}

	viewer := newBrowser(t, k.url)
	viewer.signIn("victor")
	vs, _ := viewer.session()
	if code := viewer.do("POST", "/api/v1/machines/web-1/reprovision", "{}", map[string]string{sso.CSRFHeader: vs.CSRF, "Origin": k.url}, nil); code != http.StatusForbidden {
		t.Errorf("viewer's reprovision with a valid CSRF token: %d, want 403", code)
	}

	if code := op.do("POST", "/ui/logout", "", map[string]string{"Origin": k.url}, nil); code != http.StatusForbidden {
		t.Errorf("sign-out without the CSRF token: %d, want 403 (a page elsewhere must not sign people out)", code)
	}
	u, _ := url.Parse(k.url)
	cookies := op.client.Jar.Cookies(u)
	if code := op.do("POST", "/ui/logout", "", csrf, nil); code != http.StatusOK {
		t.Fatalf("sign-out: %d", code)
	}
	// The old cookie, replayed after sign-out, is refused by the server: sign-out
	// revoked the session, it did not only ask the browser to forget it.
	if len(cookies) == 0 {
		t.Fatal("no session cookie was set")
	}
	replay, _ := http.NewRequest("GET", k.url+"/api/v1/whoami", nil)
	for _, c := range cookies {
		replay.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(replay)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the signed-out session's cookie replayed: %d, want 401", resp.StatusCode)
	}
}

// TestConsoleLoginStateBoundToBrowser: a callback whose state this browser did
// not start (an attacker's code pushed into a victim's browser) is refused.
func TestConsoleLoginStateBoundToBrowser(t *testing.T) {
	k := newSSOKiln(t)
	b := newBrowser(t, k.url)
	resp, err := b.client.Get(k.url + "/ui/callback?state=made-up&code=whatever")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("callback with a foreign state: %d, want 400", resp.StatusCode)
	}
	if _, code := b.session(); code != http.StatusUnauthorized {
		t.Errorf("a session exists after a foreign callback: %d", code)
	}
}

// TestConsoleHeaders: every page under /ui/ carries the CSP that forbids inline
// script and framing.
func TestConsoleHeaders(t *testing.T) {
	s := newTestServer(t)
	for _, p := range []string{"/ui/", "/ui/assets/app.js", "/ui/session"} {
		rec := httptest.NewRecorder()
		s.http.Handler.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		if got := rec.Header().Get("Content-Security-Policy"); got != ui.ContentSecurityPolicy {
			t.Errorf("%s: CSP %q", p, got)
		}
		if rec.Header().Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: X-Frame-Options %q", p, rec.Header().Get("X-Frame-Options"))
		}
	}
}
