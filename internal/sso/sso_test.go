package sso

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var roles = map[string][]string{"admin": {"ops-leads"}, "operator": {"ops"}, "viewer": {"staff", "ops"}}

func TestRoleFor(t *testing.T) {
	cfg := Config{Roles: roles}
	for _, c := range []struct {
		name   string
		claims map[string]any
		want   string
		err    string
	}{
		{"list, highest role wins", map[string]any{"groups": []any{"staff", "ops", "ops-leads"}}, "admin", ""},
		{"operator over viewer", map[string]any{"groups": []any{"ops"}}, "operator", ""},
		{"viewer", map[string]any{"groups": []any{"staff"}}, "viewer", ""},
		{"space-separated string", map[string]any{"groups": "x staff"}, "viewer", ""},
		{"no mapped group", map[string]any{"groups": []any{"sales"}}, "", "none of your groups"},
		{"no claim", map[string]any{}, "", "none of your groups"},
		{"case matters", map[string]any{"groups": []any{"OPS"}}, "", "none of your groups"},
		{"not strings", map[string]any{"groups": []any{"ops", 7.0}}, "", `claim "groups": [1]: a float64`},
		{"an object", map[string]any{"groups": map[string]any{"ops": true}}, "", "not a list of group names"},
		{"too many", map[string]any{"groups": make([]any, maxGroups+1)}, "", "more than 1000 groups"},
	} {
		got, err := cfg.RoleFor(c.claims)
		if got != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: RoleFor = %q, %v; want %q, error containing %q", c.name, got, err, c.want, c.err)
		}
	}
	other := Config{Roles: roles, RoleClaim: "roles"}
	if got, _ := other.RoleFor(map[string]any{"groups": []any{"ops"}, "roles": []any{"staff"}}); got != "viewer" {
		t.Errorf("roleClaim roles: %q, want the roles claim read (viewer)", got)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Issuer: "https://idp.example.com", ClientID: "kiln", RedirectURL: "https://kiln.example.com/ui/callback", Roles: roles}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("no oidc section: %v", err)
	}
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Issuer = "idp.example.com" }, "oidc.issuer"},
		{func(c *Config) { c.ClientID = "" }, "oidc.clientID: required"},
		{func(c *Config) { c.RedirectURL = "https://kiln.example.com/elsewhere" }, "oidc.redirectURL"},
		{func(c *Config) { c.Roles = nil }, "oidc.roles"},
		{func(c *Config) { c.Roles = map[string][]string{"root": {"x"}} }, "oidc.roles.root: not a role"},
		{func(c *Config) { c.Roles = map[string][]string{"viewer": {""}} }, "oidc.roles.viewer[0]: empty group"},
		{func(c *Config) { c.SessionTTL = -time.Second }, "oidc.sessionTTL"},
	} {
		cfg := good
		c.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate = %v, want an error naming %q", err, c.want)
		}
	}
}

func TestSessionsExpireAndAreBounded(t *testing.T) {
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	s := &Sessions{TTL: time.Hour, Max: 3, Now: func() time.Time { return now }}
	first, _ := s.Create(Session{Actor: "user:a", Role: "viewer"})
	req := func(id string) *http.Request {
		r := httptest.NewRequest("GET", "/api/v1/whoami", nil)
		r.AddCookie(&http.Cookie{Name: cookieName, Value: id})
		return r
	}
	if got, err := s.Authenticate(req(first)); err != nil || got.Actor != "user:a" {
		t.Fatalf("fresh session: %v %v", got, err)
	}
	if _, err := s.Authenticate(req(first + "x")); err != ErrSessionInvalid {
		t.Errorf("unknown session id: %v", err)
	}
	if _, err := s.Authenticate(httptest.NewRequest("GET", "/", nil)); err != ErrNoSession {
		t.Errorf("no cookie: %v", err)
	}
	now = now.Add(time.Hour)
	if _, err := s.Authenticate(req(first)); err != ErrSessionInvalid {
		t.Errorf("a session at its TTL: %v, want ErrSessionInvalid", err)
	}
	var ids []string
	for i := range 5 {
		now = now.Add(time.Minute)
		id, _ := s.Create(Session{Actor: "user:" + string(rune('b'+i)), Role: "viewer"})
		ids = append(ids, id)
	}
	if n := len(s.byID); n > 3 {
		t.Errorf("%d sessions held, Max is 3", n)
	}
	if _, err := s.Authenticate(req(ids[0])); err != ErrSessionInvalid {
		t.Errorf("the oldest session past Max: %v, want dropped", err)
	}
	if _, err := s.Authenticate(req(ids[4])); err != nil {
		t.Errorf("the newest session: %v", err)
	}
}

func TestWritesNeedCSRFAndSameOrigin(t *testing.T) {
	s := &Sessions{}
	id, sess := s.Create(Session{Actor: "user:o", Role: "operator"})
	for _, c := range []struct {
		name    string
		method  string
		headers map[string]string
		want    error
	}{
		{"GET needs no token", "GET", nil, nil},
		{"POST with token, same origin", "POST", map[string]string{CSRFHeader: sess.CSRF, "Origin": "http://kiln.test", "Sec-Fetch-Site": "same-origin"}, nil},
		{"POST with token, no Origin (old client)", "POST", map[string]string{CSRFHeader: sess.CSRF}, nil},
		{"POST without token", "POST", map[string]string{"Origin": "http://kiln.test"}, ErrForged},
		{"DELETE with another session's token", "DELETE", map[string]string{CSRFHeader: "nope"}, ErrForged},
		{"POST from another origin", "POST", map[string]string{CSRFHeader: sess.CSRF, "Origin": "http://kiln.test.evil.example"}, ErrForged},
		{"POST with Origin null", "POST", map[string]string{CSRFHeader: sess.CSRF, "Origin": "null"}, ErrForged},
		{"PUT same-site but not same-origin", "PUT", map[string]string{CSRFHeader: sess.CSRF, "Sec-Fetch-Site": "same-site"}, ErrForged},
	} {
		r := httptest.NewRequest(c.method, "http://kiln.test/api/v1/machines", nil)
		r.AddCookie(&http.Cookie{Name: cookieName, Value: id})
		for k, v := range c.headers {
			r.Header.Set(k, v)
		}
		if _, err := s.Authenticate(r); err != c.want {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestCookieAttributes(t *testing.T) {
	for _, secure := range []bool{false, true} {
		rec := httptest.NewRecorder()
		setCookie(rec, secure, "id", time.Now().Add(time.Hour))
		c := rec.Result().Cookies()[0]
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure != secure || (secure && c.Name != "__Host-kiln_session") {
			t.Errorf("secure=%v: cookie %+v", secure, c)
		}
	}
}

// FuzzRoleFor: whatever a provider puts in the claim, mapping it refuses or
// returns a role; it never panics.
func FuzzRoleFor(f *testing.F) {
	f.Add("groups", "ops", "staff,ops-leads")
	f.Add("roles", "", " , ")
	f.Fuzz(func(t *testing.T, claim, a, b string) {
		cfg := Config{Roles: roles, RoleClaim: claim}
		for _, v := range []any{a, []any{a, b}, []string{a, b}, []any{a, 1.0}, nil} {
			got, err := cfg.RoleFor(map[string]any{cfg.withDefaults().RoleClaim: v})
			if (err == nil) == (got == "") {
				t.Fatalf("RoleFor(%q) = %q, %v", v, got, err)
			}
		}
	})
}
