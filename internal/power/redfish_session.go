package power

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The Redfish protocol (DSP0266) as the driver speaks it: HTTP requests and the
// errors a BMC answers with, then the session (login, reuse, logout).

// ---- transport ---------------------------------------------------------------------

type rfResponse struct {
	status int
	header http.Header
	body   []byte
}

// statusError is a Redfish error answer (HTTP 4xx/5xx).
type statusError struct {
	method, path string
	status       int
	msg          string
}

func (e *statusError) Error() string {
	kind := ErrRejected
	if e.status == http.StatusUnauthorized || e.status == http.StatusForbidden {
		kind = ErrAuth
	}
	s := fmt.Sprintf("%v: %s %s: HTTP %d", kind, e.method, e.path, e.status)
	if e.msg != "" {
		s += ": " + e.msg
	}
	return s
}

func (e *statusError) Is(target error) bool {
	switch e.status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return target == ErrAuth
	}
	return target == ErrRejected
}

// redfishMessage extracts the human-readable part of a Redfish error body
// (DSP0266 "Error responses": error.message and @Message.ExtendedInfo).
func redfishMessage(body []byte) string {
	var e struct {
		Error struct {
			Code     string `json:"code"`
			Message  string `json:"message"`
			Extended []struct {
				MessageID string `json:"MessageId"`
				Message   string
			} `json:"@Message.ExtendedInfo"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return clip(string(body), 200)
	}
	var parts []string
	for _, x := range e.Error.Extended {
		if x.Message != "" {
			parts = append(parts, x.Message)
		} else if x.MessageID != "" {
			parts = append(parts, x.MessageID)
		}
	}
	if len(parts) == 0 {
		for _, s := range []string{e.Error.Message, e.Error.Code} {
			if s != "" {
				parts = append(parts, s)
				break
			}
		}
	}
	return clip(strings.Join(parts, "; "), 300)
}

// resolve turns an @odata.id or a Location into a URL on the BMC. A reference to
// another host is refused: the session token must not leave the BMC.
func (r *redfish) resolve(ref string) (*url.URL, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: reference %q is not a URL", ErrMalformed, clip(ref, 100))
	}
	u = r.base.ResolveReference(u)
	if u.Scheme != r.base.Scheme || u.Host != r.base.Host {
		return nil, fmt.Errorf("%w: reference %q points away from the BMC", ErrMalformed, clip(ref, 100))
	}
	return u, nil
}

// request sends one HTTP request, bounded by RequestTimeout, and reads at most
// MaxResponseBytes of the answer.
func (r *redfish) request(ctx context.Context, method, ref string, body any, ifMatch string, auth bool) (*rfResponse, error) {
	u, err := r.resolve(ref)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %v", ErrConfig, method, u.Path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("OData-Version", "4.0")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	if auth {
		switch {
		case r.token != "":
			req.Header.Set("X-Auth-Token", r.token)
		case r.basic:
			req.SetBasicAuth(r.user, r.password)
		}
	}
	start := time.Now()
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, transportError(method, u.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, r.opts.MaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: reading the response: %v", ErrUnreachable, method, u.Path, err)
	}
	if int64(len(data)) > r.opts.MaxResponseBytes {
		return nil, fmt.Errorf("%w: %s %s: response larger than %d bytes", ErrMalformed, method, u.Path, r.opts.MaxResponseBytes)
	}
	r.log.Debug("redfish request", "method", method, "path", u.Path, "status", resp.StatusCode, "duration", time.Since(start))
	return &rfResponse{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

func transportError(method, path string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if isTLSError(err) {
		return fmt.Errorf("%w: %s %s: %v", ErrTLS, method, path, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s %s: no answer in time: %w", ErrUnreachable, method, path, context.DeadlineExceeded)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s %s: %w", method, path, context.Canceled)
	}
	return fmt.Errorf("%w: %s %s: %v", ErrUnreachable, method, path, err)
}

// call sends an authenticated request after connecting, and fails unless the
// answer's status is one of ok.
func (r *redfish) call(ctx context.Context, method, ref string, body any, ifMatch string, ok ...int) (*rfResponse, error) {
	if err := r.connect(ctx); err != nil {
		return nil, err
	}
	resp, err := r.request(ctx, method, ref, body, ifMatch, true)
	if err != nil {
		return nil, err
	}
	if resp.status == http.StatusUnauthorized && r.token != "" {
		// The session expired (BMC session timeouts are often minutes) or an
		// administrator ended it: log in again, once.
		r.token, r.sessionPath = "", ""
		if err := r.login(ctx); err != nil {
			return nil, err
		}
		if resp, err = r.request(ctx, method, ref, body, ifMatch, true); err != nil {
			return nil, err
		}
	}
	if !slices.Contains(ok, resp.status) {
		return nil, r.statusError(method, ref, resp)
	}
	return resp, nil
}

func (r *redfish) statusError(method, ref string, resp *rfResponse) error {
	p := ref
	if u, err := r.resolve(ref); err == nil {
		p = u.Path
	}
	return &statusError{method: method, path: p, status: resp.status, msg: redfishMessage(resp.body)}
}

// getJSON reads a resource into v and returns its ETag (the header, else
// @odata.etag, which iLO and AMI put in the body).
func (r *redfish) getJSON(ctx context.Context, ref, what string, v any) (string, error) {
	resp, err := r.call(ctx, http.MethodGet, ref, nil, "", http.StatusOK)
	if err != nil {
		return "", err
	}
	if err := decodeResource(resp.body, what+" "+ref, v); err != nil {
		return "", err
	}
	etag := resp.header.Get("ETag")
	if etag == "" {
		var e struct {
			ETag string `json:"@odata.etag"`
		}
		_ = json.Unmarshal(resp.body, &e)
		etag = e.ETag
	}
	return etag, nil
}

// ---- session -----------------------------------------------------------------------

// connect reads the service root, logs in and finds the ComputerSystem, once.
func (r *redfish) connect(ctx context.Context) error {
	if r.connected {
		return nil
	}
	// DSP0266 lets the service root be read without authentication; some BMCs
	// still answer 401, in which case the standard locations are assumed until
	// the root can be read after login.
	resp, err := r.request(ctx, http.MethodGet, serviceRootPath, nil, "", false)
	if err != nil {
		return err
	}
	var root serviceRoot
	rootRead := false
	switch resp.status {
	case http.StatusOK:
		if err := decodeResource(resp.body, "service root", &root); err != nil {
			return err
		}
		rootRead = true
		r.sessionsPath = root.Links.Sessions.ID
		if r.sessionsPath == "" && root.SessionService.ID != "" {
			r.sessionsPath = strings.TrimSuffix(root.SessionService.ID, "/") + "/Sessions"
		}
	case http.StatusUnauthorized, http.StatusForbidden:
		r.sessionsPath = "/redfish/v1/SessionService/Sessions"
	default:
		return r.statusError(http.MethodGet, serviceRootPath, resp)
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	if !rootRead {
		resp, err := r.request(ctx, http.MethodGet, serviceRootPath, nil, "", true)
		if err != nil {
			return err
		}
		if resp.status != http.StatusOK {
			return r.statusError(http.MethodGet, serviceRootPath, resp)
		}
		if err := decodeResource(resp.body, "service root", &root); err != nil {
			return err
		}
	}
	r.connected = true // from here on, call() may be used
	if r.systemPath == "" {
		if root.Systems.ID == "" {
			r.connected = false
			return fmt.Errorf("%w: the service root lists no Systems", ErrUnsupported)
		}
		var systems collection
		if _, err := r.getJSON(ctx, root.Systems.ID, "Systems collection", &systems); err != nil {
			r.connected = false
			return err
		}
		if len(systems.Members) == 0 || systems.Members[0].ID == "" {
			r.connected = false
			return fmt.Errorf("%w: the Systems collection is empty", ErrUnsupported)
		}
		if len(systems.Members) > 1 {
			r.log.Debug("redfish: several systems, using the first; put /redfish/v1/Systems/<id> in the address to choose",
				"system", systems.Members[0].ID)
		}
		u, err := r.resolve(systems.Members[0].ID)
		if err != nil {
			r.connected = false
			return err
		}
		r.systemPath = strings.TrimSuffix(u.Path, "/")
	}
	return nil
}

// login creates a session (DSP0266 "Session login"), or falls back to basic
// auth when the BMC has no SessionService or refuses sessions with 404/405/501.
func (r *redfish) login(ctx context.Context) error {
	if r.sessionsPath == "" {
		r.basic = true
		return nil
	}
	resp, err := r.request(ctx, http.MethodPost, r.sessionsPath,
		map[string]string{"UserName": r.user, "Password": r.password}, "", false)
	if err != nil {
		return err
	}
	switch resp.status {
	case http.StatusOK, http.StatusCreated, http.StatusNoContent:
		token := resp.header.Get("X-Auth-Token")
		if token == "" {
			return fmt.Errorf("%w: POST %s: session created without an X-Auth-Token", ErrMalformed, r.sessionsPath)
		}
		loc := resp.header.Get("Location")
		if loc == "" {
			var s odataID
			_ = json.Unmarshal(resp.body, &s)
			loc = s.ID
		}
		r.token, r.basic, r.sessionPath = token, false, ""
		if loc != "" {
			if u, err := r.resolve(loc); err == nil {
				r.sessionPath = u.Path
			}
		}
		return nil
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		r.log.Debug("redfish: sessions refused, using basic auth", "status", resp.status)
		r.basic = true
		return nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%w: POST %s: HTTP %d", ErrAuth, r.sessionsPath, resp.status)
	}
	return r.statusError(http.MethodPost, r.sessionsPath, resp)
}

// Close deletes the session, if one was created.
func (r *redfish) Close(ctx context.Context) error {
	defer r.transport.CloseIdleConnections()
	if r.token == "" || r.sessionPath == "" {
		r.token = ""
		return nil
	}
	session := r.sessionPath
	resp, err := r.request(ctx, http.MethodDelete, session, nil, "", true)
	r.token, r.sessionPath, r.connected = "", "", false
	if err != nil {
		return r.wrap("log out", err)
	}
	if resp.status >= 300 && resp.status != http.StatusNotFound {
		return r.wrap("log out", r.statusError(http.MethodDelete, session, resp))
	}
	return nil
}

func (r *redfish) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return redact(fmt.Errorf("redfish %s: %s: %w", r.addr, op, err), r.password)
}
