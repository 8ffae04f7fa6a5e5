package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// Transport is how the agent reaches Kiln: an HTTP client that presents the
// machine's certificate (mTLS) and the server's base URL. An enrolled *MTLSTransport is
// one; tests use StaticTransport.
type Transport interface {
	Client() *http.Client
	BaseURL() string
}

// StaticTransport is a Transport over a fixed client and URL.
type StaticTransport struct {
	HTTP *http.Client
	URL  string
}

// Client returns the HTTP client (http.DefaultClient when nil).
func (s StaticTransport) Client() *http.Client {
	if s.HTTP == nil {
		return http.DefaultClient
	}
	return s.HTTP
}

// BaseURL returns the server URL.
func (s StaticTransport) BaseURL() string { return s.URL }

var _ Transport = (*MTLSTransport)(nil)

// ErrMovedOn: the server refused a report because the workflow is no longer the
// one this agent runs (finished, superseded, timed out: 409), or is gone (404).
// The agent stops the workflow cleanly; it is not a failure of the agent.
var ErrMovedOn = errors.New("the server moved on from this workflow")

// HTTPError is a non-2xx answer.
type HTTPError struct {
	Method, Path string
	Code         int
	Message      string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Code, http.StatusText(e.Code), e.Message)
}

// transient reports whether an error is worth retrying: the server was unreachable,
// restarting or overloaded. Client errors (4xx) are not transient: retrying the same
// request gives the same answer.
func transient(err error) bool {
	if err == nil || errors.Is(err, ErrMovedOn) || errors.Is(err, context.Canceled) {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Code >= 500 || he.Code == http.StatusTooManyRequests || he.Code == http.StatusRequestTimeout
	}
	return true // network errors, timeouts of a single request, truncated answers
}

// Backoff is capped exponential backoff with jitter.
type Backoff struct {
	Initial time.Duration // first wait; default 500ms
	Max     time.Duration // cap; default 30s
}

// Delay is the wait before retry number n (1-based), with ±20% jitter so that many
// agents do not come back at the same instant after a Kiln restart.
func (b Backoff) Delay(n int) time.Duration {
	ini, max := b.Initial, b.Max
	if ini <= 0 {
		ini = 500 * time.Millisecond
	}
	if max <= 0 {
		max = 30 * time.Second
	}
	d := ini
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	j := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * j)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// apiClient makes the agent's calls to /agent/v1.
type apiClient struct {
	t              Transport
	log            *slog.Logger
	backoff        Backoff
	requestTimeout time.Duration
}

// maxLogBatch bounds the log lines of one report (the server keeps the last 20 per
// action in status, and every line as an event).
const maxLogBatch = 50

// call makes one request. out may be nil; a 204 leaves it untouched and returns
// (false, nil).
func (c *apiClient) call(ctx context.Context, method, path string, body, out any) (bool, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return false, err
		}
		rd = bytes.NewReader(b)
	}
	rt := c.requestTimeout
	if rt <= 0 {
		rt = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, rt)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.t.BaseURL(), "/")+path, rd)
	if err != nil {
		return false, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.t.Client().Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return false, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return false, nil
	case resp.StatusCode >= 300:
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return false, &HTTPError{Method: method, Path: path, Code: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return false, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return true, nil
}

// reliably repeats f while it fails transiently, with capped backoff, until it
// succeeds, fails for good, or ctx ends. Kiln being down for a while (a restart, an
// upgrade) only delays the agent.
func (c *apiClient) reliably(ctx context.Context, what string, f func() error) error {
	for n := 1; ; n++ {
		err := f()
		if !transient(err) {
			return err
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		d := c.backoff.Delay(n)
		c.log.Warn("kiln unreachable; retrying", "call", what, "attempt", n, "in", d.Round(time.Millisecond), "err", err)
		if err := sleepCtx(ctx, d); err != nil {
			return err
		}
	}
}

// workflow fetches the current workflow; nil when there is none.
func (c *apiClient) workflow(ctx context.Context) (*agentwire.WorkflowResponse, error) {
	var wf agentwire.WorkflowResponse
	var found bool
	err := c.reliably(ctx, "get workflow", func() (err error) {
		found, err = c.call(ctx, http.MethodGet, agentwire.WorkflowPath, nil, &wf)
		return err
	})
	if err != nil || !found {
		return nil, err
	}
	if wf.Status == nil {
		return nil, fmt.Errorf("workflow %q: answer has no status", wf.Name)
	}
	return &wf, nil
}

// facts sends the machine's facts.
func (c *apiClient) facts(ctx context.Context, f map[string]any) error {
	return c.reliably(ctx, "send facts", func() error {
		_, err := c.call(ctx, http.MethodPost, agentwire.FactsPath, f, nil)
		return err
	})
}

// report sends one report once; a 409 or 404 is ErrMovedOn.
func (c *apiClient) report(ctx context.Context, wf, action string, r agentwire.Report) error {
	path := agentwire.ActionReportPath(wf, action)
	_, err := c.call(ctx, http.MethodPost, path, r, nil)
	var he *HTTPError
	if errors.As(err, &he) && (he.Code == http.StatusConflict || he.Code == http.StatusNotFound) {
		return fmt.Errorf("%w: %s", ErrMovedOn, he.Message)
	}
	return err
}

// reportReliably sends a report until the server has it.
func (c *apiClient) reportReliably(ctx context.Context, wf, action string, r agentwire.Report) error {
	return c.reliably(ctx, "report "+action+" "+r.State, func() error { return c.report(ctx, wf, action, r) })
}
