package sso

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Sessions are kept in memory, keyed by the SHA-256 of their random ID. Why not in
// the store: a console session is cheap to make again (one redirect through the
// provider), so losing them at a restart costs a click, while a store table would
// need a migration on both engines and a sweep. The price: several replicas behind
// one address need sticky sessions, and a restart signs everybody out (which also
// revokes every session, the safe direction).
type Sessions struct {
	// TTL is a session's lifetime from sign-in.
	TTL time.Duration
	// Max bounds live sessions; at the bound the oldest is dropped first.
	Max int
	// Now is the clock (tests move it).
	Now func() time.Time

	mu   sync.Mutex
	byID map[[32]byte]*Session
}

// Session is one signed-in person.
type Session struct {
	// Actor is who the audit log names: "user:" and the email (or the issuer's
	// subject when the provider gives no email).
	Actor   string `json:"actor"`
	Subject string `json:"subject"`
	Email   string `json:"email,omitempty"`
	Name    string `json:"name,omitempty"`
	Role    string `json:"role"`
	// CSRF is the token every write made with this session carries in the
	// X-Kiln-CSRF header (the console reads it from /ui/session).
	CSRF    string    `json:"csrf"`
	Expires time.Time `json:"expires"`
	created time.Time
}

// CSRFHeader carries a session's CSRF token on writes.
const CSRFHeader = "X-Kiln-CSRF"

// Cookie names: with __Host- (Secure, Path=/, no Domain: no sibling host can set
// or shadow it) when served over HTTPS.
const (
	cookieName       = "kiln_session"
	secureCookieName = "__Host-kiln_session"
)

// DefaultMaxSessions bounds the sessions held in memory.
const DefaultMaxSessions = 10000

var (
	// ErrNoSession: the request carries no session cookie.
	ErrNoSession = errors.New("no session cookie")
	// ErrSessionInvalid: the cookie names no live session (expired, signed out,
	// or the server restarted).
	ErrSessionInvalid = errors.New("the session has expired or was signed out; sign in again")
	// ErrForged: a write with a session cookie but without the session's CSRF
	// token, or sent from another site.
	ErrForged = errors.New("a write with a session cookie needs the X-Kiln-CSRF header and a same-origin request")
)

func randomToken() string {
	var b [32]byte
	rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *Sessions) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Create starts a session for who and returns its ID (the cookie's value).
func (s *Sessions) Create(who Session) (string, *Session) {
	id := randomToken()
	now := s.now()
	who.CSRF = randomToken()
	who.created = now
	ttl := s.TTL
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	who.Expires = now.Add(ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID == nil {
		s.byID = map[[32]byte]*Session{}
	}
	s.evictLocked(now)
	sess := &who
	s.byID[sha256.Sum256([]byte(id))] = sess
	return id, sess
}

// evictLocked drops expired sessions and, at the bound, the oldest.
func (s *Sessions) evictLocked(now time.Time) {
	max := s.Max
	if max <= 0 {
		max = DefaultMaxSessions
	}
	if len(s.byID) < max {
		return
	}
	var oldest [32]byte
	var oldestAt time.Time
	for k, v := range s.byID {
		if !now.Before(v.Expires) {
			delete(s.byID, k)
			continue
		}
		if oldestAt.IsZero() || v.created.Before(oldestAt) {
			oldest, oldestAt = k, v.created
		}
	}
	if len(s.byID) >= max {
		delete(s.byID, oldest)
	}
}

// lookup returns the live session with this ID.
func (s *Sessions) lookup(id string) (*Session, bool) {
	key := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.byID[key]
	if !ok {
		return nil, false
	}
	if !s.now().Before(sess.Expires) {
		delete(s.byID, key)
		return nil, false
	}
	c := *sess
	return &c, true
}

// Revoke ends the session with this ID; it reports whether there was one.
func (s *Sessions) Revoke(id string) (*Session, bool) {
	key := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.byID[key]
	delete(s.byID, key)
	return sess, ok
}

// sessionID is the request's session cookie value, "" without one.
func sessionID(r *http.Request) string {
	for _, name := range []string{secureCookieName, cookieName} {
		if c, err := r.Cookie(name); err == nil && c.Value != "" {
			return c.Value
		}
	}
	return ""
}

// safeMethod: a method that changes nothing (RFC 9110 section 9.2.1), which a
// cross-site page can make a browser send anyway, so it must never write.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// Authenticate returns the session a request's cookie names. A write (any
// unsafe method) must also carry the session's CSRF token in X-Kiln-CSRF, which
// a page on another site cannot read nor set without a CORS preflight Kiln never
// grants, and must not come from another origin (Origin, Sec-Fetch-Site): the
// two checks guard each other's gaps (old browsers without Sec-Fetch-Site, a
// token leaked into a log).
func (s *Sessions) Authenticate(r *http.Request) (*Session, error) {
	id := sessionID(r)
	if id == "" {
		return nil, ErrNoSession
	}
	sess, ok := s.lookup(id)
	if !ok {
		return nil, ErrSessionInvalid
	}
	if safeMethod(r.Method) {
		return sess, nil
	}
	if !sameOrigin(r) {
		return nil, ErrForged
	}
	got := r.Header.Get(CSRFHeader)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sess.CSRF)) != 1 {
		return nil, ErrForged
	}
	return sess, nil
}

// sameOrigin reports whether a write came from Kiln's own pages: Sec-Fetch-Site
// (when the browser sends it) is same-origin, and Origin (when present) names
// the host the request was sent to.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return u.Host == r.Host
}

// setCookie writes the session cookie: HttpOnly (no script reads it), SameSite
// Lax (sent on the provider's redirect back, never on a cross-site POST), Secure
// and __Host- over HTTPS.
func setCookie(w http.ResponseWriter, secure bool, id string, expires time.Time) {
	name := cookieName
	if secure {
		name = secureCookieName
	}
	c := &http.Cookie{Name: name, Value: id, Path: "/", HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode}
	if id == "" {
		c.MaxAge = -1
	} else {
		c.Expires = expires
	}
	http.SetCookie(w, c)
}
