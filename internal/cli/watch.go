package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/watch"
)

// streamGone is returned by follow when the server answers 410: what the client
// saw last is older than the retained history, and it must list again.
var errStreamGone = errors.New("the server no longer has the history after the last event seen")

// follow reads a watch route (?watch=1 added) and calls fn for every message until
// ctx ends or fn fails. A dropped stream (the server restarted, this client fell
// behind, the network broke) is reopened with Last-Event-ID, so no message is lost
// or repeated; lastID "" starts where the server says (a list's objects first).
// 410 returns errStreamGone; other error answers return an *APIError.
func (c *client) follow(ctx context.Context, path string, query url.Values, lastID string, fn func(m watch.Received) error) error {
	hc := *c.http
	hc.Timeout = 0 // a stream has no end; the context ends it
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("watch", "1")
	u := c.base + path + "?" + q.Encode()
	delay := time.Second
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "text/event-stream")
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := hc.Do(req)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			// The server is away (restarting): try again, as an EventSource would.
		case resp.StatusCode == http.StatusOK:
			d := watch.NewDecoder(resp.Body)
			for {
				m, err := d.Next()
				if err != nil {
					break
				}
				if err := fn(m); err != nil {
					resp.Body.Close()
					return err
				}
				lastID = m.ID
			}
			lastID = cmpNonEmpty(d.LastID(), lastID)
			if r := d.Retry(); r > 0 {
				delay = time.Duration(r) * time.Millisecond
			}
			resp.Body.Close()
		default:
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			var e struct {
				Error string `json:"error"`
			}
			if json.Unmarshal(data, &e) != nil || e.Error == "" {
				e.Error = strings.TrimSpace(string(data))
			}
			switch {
			case resp.StatusCode == http.StatusGone:
				return fmt.Errorf("%w: %s", errStreamGone, e.Error)
			case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
				// Busy or restarting: try again.
			default:
				return &APIError{Code: resp.StatusCode, Message: e.Error}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}

func cmpNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
