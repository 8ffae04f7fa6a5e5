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
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/enroll"
	"github.com/kilnhq/kiln/internal/server"
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

// newClient resolves the server and token: flags, then KILN_SERVER / KILN_TOKEN (bound
// to the flags), then the files `kiln serve` leaves in the data dir on this host.
func newClient(g *globalFlags) (*client, error) {
	base := g.server
	var caFile string // the data dir's CA, for a server URL from the same data dir
	if base == "" {
		if b, err := os.ReadFile(filepath.Join(g.dataDir, server.ServerURLFile)); err == nil {
			base = strings.TrimSpace(string(b))
			caFile = filepath.Join(g.dataDir, enroll.CACertFileName)
		}
	}
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	tok := g.token
	if tok == "" {
		// A person who ran kiln login acts as themselves, also on the server host.
		tok = loginToken(strings.TrimRight(base, "/"), time.Now())
	}
	if tok == "" {
		path := filepath.Join(g.dataDir, server.AdminTokenFile)
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read API token: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	hc := &http.Client{Timeout: g.timeout}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %w", base, err)
	}
	if u.Scheme == "https" {
		trust, err := newServerTrust(g, u, caFile)
		if err != nil {
			return nil, err
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = trust.tlsConfig()
		hc.Transport = tr
	}
	return &client{base: strings.TrimRight(base, "/"), token: tok, http: hc}, nil
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
