package boot_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/resource"
)

// countingSource is a loopback HTTP server standing in for an internal service an
// attacker would like Kiln to fetch from (a metadata endpoint, an admin API).
func countingSource(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func artifactObj(name, spec string) *resource.Object {
	return &resource.Object{Kind: "Artifact", Metadata: resource.Metadata{Name: name}, Spec: json.RawMessage(spec)}
}

func mustPolicy(t *testing.T, entries ...string) boot.SourcePolicy {
	t.Helper()
	p, err := boot.ParseSourcePolicy(entries)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRemoteSourceInternalAddressRefusedByDefault: with no allow-list, a source on
// loopback is never contacted, whether named by address or by a name that resolves
// to it (checked on the resolved address at dial time, so DNS cannot bypass it).
func TestRemoteSourceInternalAddressRefusedByDefault(t *testing.T) {
	src, hits := countingSource(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "internal secret") })
	port := src.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	for _, u := range []string{src.URL + "/x", fmt.Sprintf("http://localhost:%d/x", port)} {
		a := &boot.ArtifactStore{Dir: t.TempDir()}
		n, err := a.Prefetch(context.Background(), []*resource.Object{artifactObj("meta", fmt.Sprintf(`{"source": %q}`, u))})
		if n != 0 || err == nil || !errors.Is(err, boot.ErrSourceNotAllowed) {
			t.Fatalf("%s: %d fetched, err %v; want a refusal (ErrSourceNotAllowed)", u, n, err)
		}
		if !strings.Contains(err.Error(), `artifact "meta"`) || !strings.Contains(err.Error(), "spec.source") {
			t.Errorf("the refusal does not name the artifact and the field: %v", err)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("the internal source was contacted %d times", hits.Load())
	}
}

// TestRemoteSourceAllowList: a loopback source the operator allow-listed is
// fetched; the allow-list is exact (another loopback address is not in it).
func TestRemoteSourceAllowList(t *testing.T) {
	src, hits := countingSource(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "kernel") })
	a := &boot.ArtifactStore{Dir: t.TempDir(), Sources: mustPolicy(t, "127.0.0.1")}
	if n, err := a.Prefetch(context.Background(), []*resource.Object{artifactObj("k", fmt.Sprintf(`{"source": %q}`, src.URL+"/k"))}); n != 1 || err != nil {
		t.Fatalf("allow-listed source: %d fetched, %v", n, err)
	}
	a = &boot.ArtifactStore{Dir: t.TempDir(), Sources: mustPolicy(t, "127.0.0.2/32", "mirror.example.com")}
	if _, err := a.Prefetch(context.Background(), []*resource.Object{artifactObj("k", fmt.Sprintf(`{"source": %q}`, src.URL+"/k"))}); !errors.Is(err, boot.ErrSourceNotAllowed) {
		t.Fatalf("a source outside the allow-list: %v", err)
	}
	if hits.Load() != 1 {
		t.Fatalf("source contacted %d times, want 1", hits.Load())
	}
}

// TestRemoteSourceRedirectToAnotherHostRefused: an allowed source that redirects
// to another host (here a loopback name the allow-list also covers by address) is
// refused: the redirect target is never fetched.
func TestRemoteSourceRedirectToAnotherHostRefused(t *testing.T) {
	target, targetHits := countingSource(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "elsewhere") })
	port := target.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	src, _ := countingSource(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, fmt.Sprintf("http://localhost:%d/y", port), http.StatusFound)
	})
	a := &boot.ArtifactStore{Dir: t.TempDir(), Sources: mustPolicy(t, "127.0.0.1", "localhost")}
	_, err := a.Prefetch(context.Background(), []*resource.Object{artifactObj("r", fmt.Sprintf(`{"source": %q}`, src.URL+"/r"))})
	if err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("redirect to another host: %v, want a refusal", err)
	}
	if targetHits.Load() != 0 {
		t.Fatalf("the redirect target was fetched %d times", targetHits.Load())
	}
	// A redirect on the same host is followed.
	same, _ := countingSource(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/new", http.StatusFound)
			return
		}
		io.WriteString(w, "moved")
	})
	if n, err := a.Prefetch(context.Background(), []*resource.Object{artifactObj("m", fmt.Sprintf(`{"source": %q}`, same.URL+"/old"))}); n != 1 || err != nil {
		t.Fatalf("same-host redirect: %d, %v", n, err)
	}
}

// TestRemoteSourceSizeBounds: a source larger than the declared spec.size, or than
// the global cap when none is declared, is refused and not kept; a wrong sha256 is
// refused. The errors name the artifact and the field.
func TestRemoteSourceSizeBounds(t *testing.T) {
	src, _ := countingSource(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/c" {
			io.WriteString(w, "small") // within every bound, but not the declared digest
			return
		}
		io.WriteString(w, strings.Repeat("A", 4096))
	})
	cases := []struct {
		name, spec, field string
	}{
		{"declared", fmt.Sprintf(`{"source": %q, "size": 100}`, src.URL+"/a"), "spec.size"},
		{"capped", fmt.Sprintf(`{"source": %q}`, src.URL+"/b"), "size"},
		{"digest", fmt.Sprintf(`{"source": %q, "sha256": %q}`, src.URL+"/c", strings.Repeat("0", 64)), "spec.sha256"},
	}
	for _, c := range cases {
		a := &boot.ArtifactStore{Dir: t.TempDir(), Sources: mustPolicy(t, "127.0.0.1"), MaxRemoteBytes: 1000}
		n, err := a.Prefetch(context.Background(), []*resource.Object{artifactObj(c.name, c.spec)})
		if n != 0 || err == nil || !strings.Contains(err.Error(), fmt.Sprintf("artifact %q", c.name)) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %d fetched, %v; want a refusal naming the artifact and %s", c.name, n, err, c.field)
		}
	}
}

// TestSourcePolicyAddresses: the ranges refused unless allow-listed.
func TestSourcePolicyAddresses(t *testing.T) {
	def := mustPolicy(t)
	for _, s := range []string{
		"127.0.0.1", "::1", "169.254.169.254", "fd00:ec2::254", "169.254.1.1", "fe80::1",
		"0.0.0.0", "::", "224.0.0.1", "ff02::1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
		"100.64.0.1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "255.255.255.255",
	} {
		if err := def.CheckAddr("h", netip.MustParseAddr(s)); !errors.Is(err, boot.ErrSourceNotAllowed) {
			t.Errorf("%s allowed by default", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "2001:4860:4860::8888", "151.101.1.1"} {
		if err := def.CheckAddr("h", netip.MustParseAddr(s)); err != nil {
			t.Errorf("public %s refused: %v", s, err)
		}
	}
	p := mustPolicy(t, "10.0.0.0/8", "mirror.example.com")
	if err := p.CheckAddr("x", netip.MustParseAddr("10.9.9.9")); err != nil {
		t.Errorf("10.9.9.9 in an allowed prefix: %v", err)
	}
	if err := p.CheckAddr("x", netip.MustParseAddr("8.8.8.8")); err == nil {
		t.Error("an allow-list without \"public\" still allowed a public address")
	}
	if err := p.CheckAddr("mirror.example.com", netip.MustParseAddr("192.168.3.3")); err != nil {
		t.Errorf("an allow-listed name: %v", err)
	}
	if err := p.CheckAddr("mirror.example.com", netip.MustParseAddr("169.254.169.254")); err == nil {
		t.Error("an allow-listed name resolving to the metadata address was allowed")
	}
	if _, err := boot.ParseSourcePolicy([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad prefix was accepted")
	}
}
