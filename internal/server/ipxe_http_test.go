package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// startTestServer runs a whole `kiln serve` (no DHCP, no TFTP) on loopback ports with
// the given iPXE directories, and returns its HTTP and HTTPS base URLs.
func startTestServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.HTTPSListen = "127.0.0.1:0"
	cfg.ServerSANs = []string{"127.0.0.1"}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s
}

// UEFI HTTP boot asks HEAD for the size, then GETs on the same connection: the
// binary DHCP names must answer both with Content-Length and keep the connection.
func TestIPXEBinariesOverHTTP(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	// Debian 13's layout in the first directory (ipxe.efi a link to ipxe-amd64.efi),
	// Debian 12's in the second: the first one's files win, the second fills gaps.
	os.WriteFile(filepath.Join(first, "ipxe-amd64.efi"), []byte("trixie-efi"), 0o644)
	os.Symlink("ipxe-amd64.efi", filepath.Join(first, "ipxe.efi"))
	os.WriteFile(filepath.Join(second, "ipxe.efi"), []byte("bookworm-efi"), 0o644)
	os.WriteFile(filepath.Join(second, "undionly.kpxe"), []byte("bookworm-kpxe"), 0o644)
	s := startTestServer(t, Config{IPXEDirs: []string{first, second}})
	addr := s.Addr().String()

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	fmt.Fprintf(conn, "HEAD /ipxe.efi HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodHead})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != int64(len("trixie-efi")) {
		t.Fatalf("HEAD /ipxe.efi: %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
	}
	// The same connection: OVMF fails with "Unexpected network error" if it was closed.
	fmt.Fprintf(conn, "GET /ipxe.efi HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("GET after HEAD on one connection: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "trixie-efi" {
		t.Fatalf("GET /ipxe.efi = %q, want the first directory's", body)
	}
	for path, want := range map[string]int{"/undionly.kpxe": 200, "/ipxe-arm64.efi": 404, "/../etc/passwd": 404} {
		r, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, r.StatusCode, want)
		}
		if path == "/undionly.kpxe" && string(b) != "bookworm-kpxe" {
			t.Errorf("GET %s = %q, want the fallback directory's", path, b)
		}
	}
}

// On a connection without forward secrecy only public boot files are served; the
// per-machine script (which carries a join token) and the API are refused.
func TestPublicOnlyWithoutForwardSecrecy(t *testing.T) {
	h := publicOnlyWithoutForwardSecrecy(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	for _, tc := range []struct {
		method, path string
		suite        uint16
		plain        bool
		want         int
	}{
		{"GET", "/ipxe.efi", tls.TLS_RSA_WITH_AES_128_CBC_SHA256, false, 200},
		{"HEAD", "/snponly.efi", tls.TLS_RSA_WITH_AES_128_CBC_SHA256, false, 200},
		{"GET", "/artifacts/kernel", tls.TLS_RSA_WITH_AES_256_CBC_SHA, false, 200},
		{"GET", "/boot.ipxe", tls.TLS_RSA_WITH_AES_128_GCM_SHA256, false, 200},
		{"GET", "/uki/52-54-00-12-34-56.efi", tls.TLS_RSA_WITH_AES_128_CBC_SHA256, false, 200},
		{"GET", "/ipxe", tls.TLS_RSA_WITH_AES_128_CBC_SHA256, false, 403},
		{"GET", "/secrets/h/abc", tls.TLS_RSA_WITH_AES_128_CBC_SHA256, false, 403},
		{"POST", "/enroll", tls.TLS_RSA_WITH_AES_128_CBC_SHA256, false, 403},
		{"GET", "/api/v1/machines", tls.TLS_RSA_WITH_AES_128_CBC_SHA, false, 403},
		{"GET", "/ipxe", tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, false, 200},
		{"GET", "/ipxe", 0, true, 200},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		if !tc.plain {
			r.TLS = &tls.ConnectionState{CipherSuite: tc.suite}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s %s over %s: %d, want %d", tc.method, tc.path, tls.CipherSuiteName(tc.suite), w.Code, tc.want)
		}
	}
}

// The boot listener end to end: a firmware-like client (RSA key exchange only) that
// trusts the boot CA fetches the iPXE binary over HTTPS and is refused the API.
func TestBootHTTPSFirmwareClient(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ipxe.efi"), []byte("efi"), 0o644)
	s := startTestServer(t, Config{IPXEDirs: []string{dir}, BootCA: true})
	info := s.enroll.BootCA()
	if info == nil {
		t.Fatal("no boot CA with BootCA set")
	}
	pool, _ := x509CertPool(info.Certificate)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA256},
	}}}
	base := "https://" + s.tlsLn.Addr().String()
	resp, err := c.Get(base + "/ipxe.efi")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "efi" {
		t.Fatalf("GET /ipxe.efi over boot HTTPS: %d %q", resp.StatusCode, b)
	}
	resp, err = c.Get(base + "/api/v1/machines")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("API over RSA key exchange: %d, want 403", resp.StatusCode)
	}
}

func x509CertPool(pemText string) (*x509.CertPool, bool) {
	p := x509.NewCertPool()
	return p, p.AppendCertsFromPEM([]byte(pemText))
}
