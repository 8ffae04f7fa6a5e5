package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startAPIListen runs a Kiln with the operator API on its own HTTPS listener.
func startAPIListen(t *testing.T) (s *Server, dir string) {
	t.Helper()
	dir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0", ServerSANs: []string{"127.0.0.1"}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return")
		}
	})
	return s, dir
}

// TestAPIListenSeparatesAPIFromBoot: with --api-listen, the plain-HTTP boot
// listener answers 404 to the operator API (a bearer token sent there is not
// accepted, so it is not worth stealing) and still serves boot paths; the API
// is served over HTTPS with the server certificate from Kiln's CA, and the CLI
// on this host is pointed at it.
func TestAPIListenSeparatesAPIFromBoot(t *testing.T) {
	s, dir := startAPIListen(t)
	tok, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	get := func(c *http.Client, url string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	boot := "http://" + s.Addr().String()
	for _, p := range []string{"/api/v1/machines", "/api/v1/apitokens", "/metrics"} {
		if code, body := get(http.DefaultClient, boot+p); code != http.StatusNotFound {
			t.Errorf("boot listener GET %s: %d %.80q, want 404", p, code, body)
		}
	}
	if code, _ := get(http.DefaultClient, boot+"/boot.ipxe"); code != http.StatusOK {
		t.Errorf("boot listener GET /boot.ipxe: %d, want 200", code)
	}

	pem, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	api := "https://" + s.APIAddr().String()
	if code, body := get(tlsClient, api+"/api/v1/machines"); code != http.StatusOK {
		t.Fatalf("API listener GET /api/v1/machines: %d %s", code, body)
	}
	if code, _ := get(http.DefaultClient, "http://"+s.APIAddr().String()+"/api/v1/machines"); code == http.StatusOK {
		t.Error("the API listener answered plain HTTP")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ServerURLFile)); strings.TrimSpace(string(b)) != api {
		t.Errorf("server.url = %q, want the API URL %s", b, api)
	}
}
