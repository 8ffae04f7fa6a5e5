package secrets

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A handle presented over plain HTTP is refused and burnt, as an attacker who read
// it on the wire would otherwise redeem it: 403, no value, an alert (audit entry and
// machine event), and the machine's own later HTTPS request finds it used.
func TestHandleOverPlainHTTPIsBurnt(t *testing.T) {
	e := newFleet(t)
	path := handleURL(t, e)
	// Plain HTTP from the host itself (the CLI's handle-status) is not the network.
	local := httptest.NewServer(e.mux)
	defer local.Close()
	resp, err := http.Get(local.URL + path + "/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status over loopback HTTP: %d, want 200", resp.StatusCode)
	}
	// The same routes without TLS, as a host on the provisioning LAN reaches them.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.RemoteAddr = "10.0.0.66:40000"
		e.mux.ServeHTTP(w, r)
	}))
	defer plain.Close()
	for _, p := range []string{path, path + "/status"} {
		resp, err := http.Get(plain.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), apiToken) {
			t.Fatalf("GET %s over plain HTTP leaked the value", p)
		}
		if p == path && resp.StatusCode != http.StatusForbidden {
			t.Fatalf("GET %s over plain HTTP: %d %s, want 403", p, resp.StatusCode, body)
		}
		if p != path && resp.StatusCode != http.StatusGone {
			t.Fatalf("GET %s over plain HTTP after the burn: %d %s, want 410", p, resp.StatusCode, body)
		}
	}
	if code, body := e.request("GET", path, nil, nil); code != http.StatusGone || strings.Contains(string(body), apiToken) {
		t.Fatalf("GET over HTTPS after the burn: %d %q, want 410", code, body)
	}
	if n := countAudit(e.auditEntries(), "alert", "presented over plain HTTP"); n != 1 {
		t.Errorf("%d alert audit entries for the plain HTTP request, want 1", n)
	}
	if n := countEvents(e.events("web-1"), "SecretHandleOverHTTP"); n != 1 {
		t.Errorf("%d SecretHandleOverHTTP events, want 1", n)
	}
	if n := countAudit(e.auditEntries(), "release", "via handle"); n != 0 {
		t.Errorf("%d releases via handle, want none", n)
	}
	// A malformed or unknown handle over plain HTTP burns nothing and says nothing new.
	resp, err = http.Get(plain.URL + "/secret-handles/" + strings.Repeat("A", 43))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown handle over plain HTTP: %d, want 404", resp.StatusCode)
	}
}

// Handle URLs are https whatever the request came in by, and rendering one fails
// when the server knows no https URL: a handle is never sent to an http:// URL.
func TestHandleURLsAreHTTPS(t *testing.T) {
	e := newFleet(t)
	ctx := context.Background()
	for _, tc := range []struct {
		handleURL, publicURL, base string
		want                       string
	}{
		{"https://kiln.example:8443", "http://10.0.0.2:8080", "http://10.0.0.2:8080", "https://kiln.example:8443/secret-handles/"},
		{"", "http://10.0.0.2:8080", "https://10.0.0.2:8443", "https://10.0.0.2:8443/secret-handles/"},
		{"", "https://kiln.example", "http://10.0.0.2:8080", "https://kiln.example/secret-handles/"},
	} {
		e.svc.HandleURL, e.svc.PublicURL = tc.handleURL, tc.publicURL
		out, err := e.svc.Render(ctx, RenderRequest{Machine: "web-1", Target: tIgnition, Mode: ModeDeliver, BaseURL: tc.base, Actor: "machine:web-1"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out.Content), tc.want) || strings.Contains(string(out.Content), "http://10.0.0.2:8080/secret-handles/") {
			t.Errorf("HandleURL %q PublicURL %q base %q: handle not under %s:\n%s", tc.handleURL, tc.publicURL, tc.base, tc.want, out.Content)
		}
	}
	e.svc.HandleURL, e.svc.PublicURL = "", "http://10.0.0.2:8080"
	before := countAudit(e.auditEntries(), "release", "")
	_, err := e.svc.Render(ctx, RenderRequest{Machine: "web-1", Target: tIgnition, Mode: ModeDeliver, BaseURL: "http://10.0.0.2:8080", Actor: "machine:web-1"})
	wantErrIs(t, err, ErrNoHTTPS)
	if after := countAudit(e.auditEntries(), "release", ""); after != before {
		t.Errorf("a failed render released %d secrets", after-before)
	}
	_, _, err = e.svc.IssueHandle(ctx, "token:admin", "web-1", "api-token", "cmdline", 0, "http://10.0.0.2:8080")
	wantErrIs(t, err, ErrNoHTTPS)
}

// Rendered Ignition and cloud-config trust Kiln's CA (the one that signs the HTTPS
// certificate their handle URLs reach), and still pass the real validators.
func TestRenderedConfigsTrustKilnCA(t *testing.T) {
	e := newFleet(t)
	e.svc.CACertPEM = kilnCAPEM(t)
	dir := t.TempDir()
	ign, err := render(e, "web-1", tIgnition, ModeDeliver)
	if err != nil {
		t.Fatal(err)
	}
	src := "data:," + url.PathEscape(string(e.svc.CACertPEM))
	if !strings.Contains(string(ign.Content), `"certificateAuthorities":[{"source":"`+src+`"}]`) {
		t.Fatalf("Ignition does not trust Kiln's CA:\n%s", ign.Content)
	}
	ud, err := render(e, "web-1", tUserData, ModeDeliver)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ud.Content), "ca_certs:") || !strings.Contains(string(ud.Content), strings.Split(string(e.svc.CACertPEM), "\n")[1]) {
		t.Fatalf("cloud-config does not trust Kiln's CA:\n%s", ud.Content)
	}
	if p, err := exec.LookPath("ignition-validate"); err == nil {
		f := filepath.Join(dir, "c.ign")
		os.WriteFile(f, ign.Content, 0o600)
		if out, err := exec.Command(p, f).CombinedOutput(); err != nil {
			t.Fatalf("ignition-validate: %v\n%s", err, out)
		}
	}
	if p, err := exec.LookPath("cloud-init"); err == nil {
		f := filepath.Join(dir, "user-data")
		os.WriteFile(f, ud.Content, 0o600)
		if out, err := exec.Command(p, "schema", "--config-file", f).CombinedOutput(); err != nil || !strings.Contains(string(out), "Valid cloud-config") {
			t.Fatalf("cloud-init schema: %v\n%s\n%s", err, out, ud.Content)
		}
	}
}

func kilnCAPEM(t *testing.T) []byte {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Kiln CA test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
