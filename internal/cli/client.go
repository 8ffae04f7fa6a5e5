package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/discovery"
)

// client calls the operator API. The CLI never touches the store.
type client struct {
	base  string
	token string
	http  *http.Client
}

// APIError is an error answer from the server.
type APIError struct {
	Code    int
	Message string
}

// Error reads as kubectl's: "Error from server (NotFound): machine "x" not found".
// Execute prints it without another "Error:" in front.
func (e *APIError) Error() string {
	return fmt.Sprintf("Error from server (%s): %s", strings.ReplaceAll(http.StatusText(e.Code), " ", ""), e.Message)
}

// newClient resolves the server, its trust and the token (resolveEndpoint).
func newClient(g *globalFlags) (*client, error) {
	e, err := resolveEndpoint(g)
	if err != nil {
		return nil, err
	}
	base := e.base
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	hc := &http.Client{Timeout: g.timeout}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %w", base, err)
	}
	if u.Scheme == "https" {
		trust, err := newServerTrust(g, u, e)
		if err != nil {
			return nil, err
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = trust.tlsConfig()
		if e.discovered && g.dnsServer != "" {
			// The target's name resolves where its SRV record did.
			r, err := discovery.Resolver(g.dnsServer)
			if err != nil {
				return nil, fmt.Errorf("--dns-server: %w", err)
			}
			tr.DialContext = (&net.Dialer{Timeout: 30 * time.Second, Resolver: r}).DialContext
		}
		hc.Transport = tr
	}
	return &client{base: strings.TrimRight(base, "/"), token: e.token, http: hc}, nil
}

func (c *client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// A server that answers too slowly is reachable: say so, not "cannot reach".
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			return fmt.Errorf("%s %s: timed out after %s (--request-timeout; is the server overloaded?)", method, u, c.http.Timeout)
		}
		return fmt.Errorf("cannot reach kiln at %s (is `kiln serve` running? set --server or KILN_SERVER): %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return fmt.Errorf("read response from %s: %w", c.base, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		if resp.StatusCode == http.StatusUnauthorized && c.token == "" {
			e.Error += " (no API token: set --token or KILN_TOKEN, or run on the server host with --data-dir)"
		}
		return &APIError{Code: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode response of %s %s: %w", method, path, err)
		}
	}
	return nil
}

const defaultTimeout = 60 * time.Second

// call makes one API request for a command: the server and token are resolved as
// newClient does, the request runs under the command's context.
func call(cmd *cobra.Command, g *globalFlags, method, path string, query url.Values, body, out any) error {
	c, err := newClient(g)
	if err != nil {
		return err
	}
	return c.do(cmdContext(cmd), method, path, query, body, out)
}
