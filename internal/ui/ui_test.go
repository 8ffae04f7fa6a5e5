package ui

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serve(t *testing.T, h http.Handler, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestServesEmbeddedConsole(t *testing.T) {
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	page := SecurityHeaders(mux)

	rec := serve(t, page, "/ui/", nil)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `<script src="/ui/assets/app.js" defer></script>`) {
		t.Fatalf("/ui/: %d %.200s", rec.Code, rec.Body)
	}
	if rec.Header().Get("Content-Security-Policy") != ContentSecurityPolicy || rec.Header().Get("X-Frame-Options") != "DENY" {
		t.Errorf("/ui/ headers: %v", rec.Header())
	}
	// The CSP allows no inline script: the page must not hold any.
	if regexp.MustCompile(`<script>|<script [^>]*>[^<]`).MatchString(rec.Body.String()) || strings.Contains(rec.Body.String(), " on") && regexp.MustCompile(` on[a-z]+=`).MatchString(rec.Body.String()) {
		t.Error("index.html has inline script or an inline event handler, which the CSP blocks")
	}

	gz := serve(t, page, "/ui/assets/app.js", map[string]string{"Accept-Encoding": "gzip, br"})
	if gz.Header().Get("Content-Encoding") != "gzip" || !strings.HasPrefix(gz.Header().Get("Content-Type"), "text/javascript") {
		t.Fatalf("app.js: %v", gz.Header())
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := io.ReadAll(zr)
	if !bytes.Contains(js, []byte("textContent")) {
		t.Error("app.js did not decompress to the console's script")
	}
	if again := serve(t, page, "/ui/assets/app.js", map[string]string{"If-None-Match": gz.Header().Get("ETag")}); again.Code != http.StatusNotModified {
		t.Errorf("revalidation with the ETag: %d, want 304", again.Code)
	}
	for _, p := range []string{"/ui/assets/nope.js", "/ui/assets/index.html", "/ui/assets/../ui.go", "/ui/anything"} {
		if rec := serve(t, page, p, nil); rec.Code != http.StatusNotFound && rec.Code != http.StatusTemporaryRedirect {
			t.Errorf("%s: %d, want 404 (or the mux's redirect of a path with ..)", p, rec.Code)
		}
	}
}

// TestNoInnerHTML: the console builds its DOM with textContent and
// setAttribute only; innerHTML, outerHTML, insertAdjacentHTML, document.write
// or eval anywhere in the script would let machine-supplied text become markup.
func TestNoInnerHTML(t *testing.T) {
	js, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if bytes.Contains(js, []byte(bad)) {
			t.Errorf("app.js uses %s", bad)
		}
	}
}

// TestPageWeight logs what a first visit transfers (README and BENCHMARKS.md
// state it).
func TestPageWeight(t *testing.T) {
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	var raw, gz int
	for name, w := range h.PageWeight() {
		t.Logf("%-12s %6d bytes, %6d gzip", name, w[0], w[1])
		raw += w[0]
		gz += w[1]
	}
	t.Logf("total        %6d bytes, %6d gzip", raw, gz)
}
