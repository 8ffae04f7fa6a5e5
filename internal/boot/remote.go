package boot

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/minisign"
	"github.com/kilnhq/kiln/internal/resource"
)

// Remote artifacts (an http or https source) are not handed to machines as a
// redirect, where nothing would check what the loader (iPXE) fetches: Kiln fetches
// the file once into RemoteDir, hashing it on the way, keeps it only if its sha256
// is the declared one (or, for an artifact that declared none, records the
// digest, as for a local file), and serves that copy like a local file: verified
// on every change, with Range and ETag. A source whose content changed is refused
// (500 and an ArtifactRefused event), never served. It also lets iPXE builds
// without HTTPS boot from https sources.

// remoteDir is where verified copies of remote artifacts live, under Dir.
const remoteDir = ".remote"

// RemoteFetchTimeout bounds one download of a remote artifact.
const RemoteFetchTimeout = 30 * time.Minute

// DefaultMaxRemoteBytes bounds a remote artifact without a declared size.
const DefaultMaxRemoteBytes = 64 << 30

// ErrRemoteFetch: the remote source could not be fetched (502).
var ErrRemoteFetch = errors.New("cannot fetch the artifact's source")

type remoteCall struct {
	done chan struct{}
	sum  string
	err  error
}

// remote makes sure a verified copy of a remote artifact is in the cache and
// returns a spec for it: its relative path and sha256. Concurrent requests share
// one download, which does not depend on any one request staying.
func (a *ArtifactStore) remote(ctx context.Context, obj *resource.Object, spec *resource.ArtifactSpec) (*resource.ArtifactSpec, error) {
	if a == nil || a.Dir == "" {
		return nil, fmt.Errorf("no artifact directory configured")
	}
	want := expectedSHA256(obj, spec)
	a.mu.Lock()
	if want == "" {
		// Recorded by this server's first fetch, which the object read may predate.
		want = a.fetched[spec.Source]
	}
	a.mu.Unlock()
	if want != "" {
		if st, err := os.Stat(filepath.Join(a.Dir, remoteDir, want)); err == nil && st.Mode().IsRegular() {
			return cachedCopy(want), nil // open() verifies it
		}
	}
	key := spec.Source + " " + want
	a.mu.Lock()
	if a.fetching == nil {
		a.fetching = map[string]*remoteCall{}
	}
	c, ok := a.fetching[key]
	if !ok {
		c = &remoteCall{done: make(chan struct{})}
		a.fetching[key] = c
		go func() {
			fctx, cancel := context.WithTimeout(context.Background(), RemoteFetchTimeout)
			defer cancel()
			c.sum, c.err = a.fetch(fctx, obj.Metadata.Name, spec, want)
			a.mu.Lock()
			if c.err == nil {
				if a.fetched == nil {
					a.fetched = map[string]string{}
				}
				a.fetched[spec.Source] = c.sum
			}
			delete(a.fetching, key)
			a.mu.Unlock()
			close(c.done)
		}()
	}
	a.mu.Unlock()
	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if c.err != nil {
		return nil, c.err
	}
	return cachedCopy(c.sum), nil
}

// cachedCopy is the spec of the verified copy of a remote artifact.
func cachedCopy(sum string) *resource.ArtifactSpec {
	return &resource.ArtifactSpec{Source: filepath.Join(remoteDir, sum), SHA256: sum}
}

// fetch downloads spec.Source into the cache and returns its sha256.
func (a *ArtifactStore) fetch(ctx context.Context, name string, spec *resource.ArtifactSpec, want string) (string, error) {
	dir := filepath.Join(a.Dir, remoteDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	a.mu.Lock()
	if a.client == nil {
		a.client = a.Sources.client()
	}
	client := a.client
	a.mu.Unlock()
	src := redact(spec.Source)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, spec.Source, nil)
	if err != nil {
		return "", fmt.Errorf("spec.source %s: %w: %v", src, ErrRemoteFetch, err)
	}
	if err := a.Sources.checkProxied(ctx, req); err != nil {
		return "", fmt.Errorf("spec.source %s: %w: %w", src, ErrRemoteFetch, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		// url.Error repeats the URL, query and all; src is the redacted one.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("spec.source %s: %w: %w", src, ErrRemoteFetch, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("spec.source %s: %w: GET: %s", src, ErrRemoteFetch, resp.Status)
	}
	// The declared size bounds the download; without one, the global cap does.
	limit, field := cmp.Or(a.MaxRemoteBytes, DefaultMaxRemoteBytes), "size (no spec.size declared; the cap is --artifact-max-bytes)"
	if spec.Size > 0 {
		limit, field = spec.Size, "spec.size"
	}
	if resp.ContentLength > limit {
		return "", fmt.Errorf("%s: %w: %s announces %d bytes, more than %d", field, ErrDigestMismatch, src, resp.ContentLength, limit)
	}
	tmp, err := os.CreateTemp(dir, "fetch-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing
	defer tmp.Close()
	h, b2 := sha256.New(), minisign.NewHash()
	n, err := io.Copy(io.MultiWriter(tmp, h, b2), io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return "", fmt.Errorf("spec.source %s: %w: %v after %d bytes", src, ErrRemoteFetch, err, n)
	}
	if n > limit {
		return "", fmt.Errorf("%s: %w: %s sent more than %d bytes", field, ErrDigestMismatch, src, limit)
	}
	if spec.Size > 0 && n != spec.Size {
		return "", fmt.Errorf("spec.size: %w: %s is %d bytes, not the declared %d", ErrDigestMismatch, src, n, spec.Size)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		field := "spec.sha256"
		if spec.SHA256 == "" {
			field = "status.sha256 (recorded at the first fetch)"
		}
		return "", fmt.Errorf("%s: %w: %s has sha256 %s, expected %s", field, ErrDigestMismatch, src, sum, want)
	}
	// A badly signed download is not kept: it never enters the cache, and its
	// digest is never recorded.
	if a.needsSignature(spec) {
		if err := a.checkSignature(spec, b2.Sum(nil)); err != nil {
			return "", fmt.Errorf("%s: %w", src, err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, sum)); err != nil {
		return "", err
	}
	if want == "" && a.Recorder != nil {
		if err := a.Recorder.RecordArtifactDigest(ctx, name, sum); err != nil {
			return "", fmt.Errorf("record sha256 of %q: %w", name, err)
		}
	}
	return sum, nil
}

// redact drops userinfo, query and fragment from a URL for messages (they may
// hold credentials).
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// Prefetch makes sure Kiln has a verified copy of every remote artifact, so that
// the first machine to boot one does not wait for the download. It returns how
// many artifacts it fetched or found ready, and the errors of the others (each
// named).
func (a *ArtifactStore) Prefetch(ctx context.Context, objs []*resource.Object) (int, error) {
	ready := 0
	var errs []error
	for _, obj := range objs {
		spec, err := resource.Typed[resource.ArtifactSpec](obj)
		if err != nil || !(strings.HasPrefix(spec.Source, "http://") || strings.HasPrefix(spec.Source, "https://")) {
			continue
		}
		if _, err := a.remote(ctx, obj, spec); err != nil {
			errs = append(errs, fmt.Errorf("artifact %q: %w", obj.Metadata.Name, err))
			continue
		}
		ready++
	}
	return ready, errors.Join(errs...)
}
