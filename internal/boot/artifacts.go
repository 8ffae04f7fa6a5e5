package boot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kilnhq/kiln/internal/minisign"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// DigestRecorder stores the sha256 Kiln measured for an artifact that declared none.
type DigestRecorder interface {
	RecordArtifactDigest(ctx context.Context, name, sha256 string) error
}

// ArtifactStore serves artifact files from one directory. A file is hashed when it is
// first served and again whenever it changes (size, mtime or inode); a file whose hash
// is not the recorded one is refused, never served.
type ArtifactStore struct {
	Dir      string
	Recorder DigestRecorder
	// Sources is the allow-list of addresses remote sources may be fetched from
	// (sources.go); the zero value allows public addresses only.
	Sources SourcePolicy
	// MaxRemoteBytes bounds a remote artifact that declares no spec.size; 0:
	// DefaultMaxRemoteBytes.
	MaxRemoteBytes int64
	// TrustedKeys are the minisign keys artifact signatures are checked with. When
	// set, every artifact must carry a spec.signature by one of them; when empty, an
	// artifact that carries one is refused all the same (a signature Kiln cannot
	// check is not ignored).
	TrustedKeys minisign.KeyRing

	mu       sync.Mutex
	verified map[string]fileState   // by artifact name
	fetching map[string]*remoteCall // remote downloads in progress, by source and digest
	fetched  map[string]string      // the sha256 of each remote source this server fetched
	client   *http.Client           // built from Sources at the first fetch
	// peDigests caches Authenticode digests of kernels and UKIs (measured.go).
	peDigests map[peKey]string
}

type fileState struct {
	size  int64
	mtime time.Time
	ino   uint64
	sum   string
	b2    []byte // BLAKE2b-512, what a minisign signature covers
	// signed is the spec.signature that verified over this content ("" if none).
	signed string
}

// ErrSignature: the artifact is unsigned while signatures are required, or its
// signature does not verify with a trusted key.
var ErrSignature = errors.New("artifact signature refused")

// needsSignature says whether spec must pass checkSignature before it is served.
func (a *ArtifactStore) needsSignature(spec *resource.ArtifactSpec) bool {
	return spec.Signature != "" || len(a.TrustedKeys) > 0
}

// checkSignature verifies spec.signature over a file whose BLAKE2b-512 is b2.
func (a *ArtifactStore) checkSignature(spec *resource.ArtifactSpec, b2 []byte) error {
	if spec.Signature == "" {
		return fmt.Errorf("%w: unsigned, and this server requires a spec.signature by one of its --artifact-key keys", ErrSignature)
	}
	if len(a.TrustedKeys) == 0 {
		return fmt.Errorf("%w: spec.signature is set but this server trusts no key (--artifact-key)", ErrSignature)
	}
	sig, err := minisign.ParseSignature(spec.Signature)
	if err != nil {
		return fmt.Errorf("%w: spec.signature: %w", ErrSignature, err)
	}
	if err := a.TrustedKeys.Verify(sig, b2); err != nil {
		return fmt.Errorf("%w: spec.signature: %w", ErrSignature, err)
	}
	return nil
}

// ErrDigestMismatch: the file on disk is not what was recorded.
var ErrDigestMismatch = errors.New("artifact file does not match its recorded sha256")

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// artifactStatus is what Kiln records about an artifact.
type artifactStatus struct {
	SHA256 string `json:"sha256,omitempty"`
}

// expectedSHA256 is the digest an artifact's file must have: the declared one,
// else the one Kiln recorded at first serve ("" when neither).
func expectedSHA256(obj *resource.Object, spec *resource.ArtifactSpec) string {
	if spec.SHA256 != "" {
		return spec.SHA256
	}
	var as artifactStatus
	if len(obj.Status) > 0 {
		_ = json.Unmarshal(obj.Status, &as)
	}
	return as.SHA256
}

// openLocal opens a local source below the artifact directory: a path relative to
// it, or an absolute path inside it. The directory is opened as an os.Root, so a
// symlink or ".." cannot lead out of it.
func (a *ArtifactStore) openLocal(source string) (*os.File, error) {
	if a == nil || a.Dir == "" {
		return nil, fmt.Errorf("no artifact directory configured")
	}
	rel := source
	if filepath.IsAbs(rel) {
		r, err := filepath.Rel(a.Dir, rel)
		if err != nil || strings.HasPrefix(r, "..") {
			return nil, fmt.Errorf("source %q is outside the artifact directory %s", source, a.Dir)
		}
		rel = r
	}
	root, err := os.OpenRoot(a.Dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Open(filepath.ToSlash(rel))
}

// CheckSource says why an artifact could not be served now: its local source file is
// not a regular file in the artifact directory. A remote source is not checked (that
// would be a download); it is fetched when a machine first needs it. This is what a
// reprovision warns about, before a machine boots into a workflow that cannot run.
func (a *ArtifactStore) CheckSource(spec *resource.ArtifactSpec) error {
	if strings.HasPrefix(spec.Source, "http://") || strings.HasPrefix(spec.Source, "https://") {
		return nil
	}
	f, err := a.openLocal(spec.Source)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("source %q is not in the artifact directory %s", spec.Source, a.Dir)
	}
	if err != nil {
		return fmt.Errorf("source %q: %w", spec.Source, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("source %q is not a regular file", spec.Source)
	}
	return nil
}

// open returns the verified file and its digest. The file is opened first and checked
// through the open descriptor, so a swap after the check cannot be served.
func (a *ArtifactStore) open(ctx context.Context, obj *resource.Object, spec *resource.ArtifactSpec) (*os.File, string, error) {
	f, err := a.openLocal(spec.Source)
	if err != nil {
		return nil, "", err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, "", fmt.Errorf("source %q is not a regular file", spec.Source)
	}
	want := expectedSHA256(obj, spec)
	cur := fileState{size: st.Size(), mtime: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		cur.ino = sys.Ino
	}
	name := obj.Metadata.Name
	a.mu.Lock()
	prev, ok := a.verified[name]
	a.mu.Unlock()
	if ok && prev.size == cur.size && prev.mtime.Equal(cur.mtime) && prev.ino == cur.ino && (want == "" || prev.sum == want) {
		if !a.needsSignature(spec) || prev.signed == spec.Signature && prev.b2 != nil {
			return f, prev.sum, nil
		}
		if prev.b2 != nil {
			// The content is the one hashed before; the signature is new (the
			// artifact was re-applied) or the keys changed: check it, no re-read.
			if err := a.checkSignature(spec, prev.b2); err != nil {
				f.Close()
				return nil, "", err
			}
			prev.signed = spec.Signature
			a.mu.Lock()
			a.verified[name] = prev
			a.mu.Unlock()
			return f, prev.sum, nil
		}
	}
	// BLAKE2b only when a signature is to be checked: unsigned artifacts on a
	// server without keys pay for sha256 alone.
	h := sha256.New()
	var b2 hash.Hash
	w := io.Writer(h)
	if a.needsSignature(spec) {
		b2 = minisign.NewHash()
		w = io.MultiWriter(h, b2)
	}
	if _, err := io.Copy(w, f); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("hash %q: %w", spec.Source, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		f.Close()
		return nil, "", fmt.Errorf("%w: %s has sha256 %s, recorded %s", ErrDigestMismatch, spec.Source, sum, want)
	}
	// The signature is checked before the digest is recorded: the sha256 Kiln
	// records (and hands the agent to check what it writes) is of signed content.
	if b2 != nil {
		cur.b2 = b2.Sum(nil)
		if err := a.checkSignature(spec, cur.b2); err != nil {
			f.Close()
			return nil, "", err
		}
		cur.signed = spec.Signature
	}
	if want == "" && a.Recorder != nil {
		if err := a.Recorder.RecordArtifactDigest(ctx, name, sum); err != nil {
			f.Close()
			return nil, "", fmt.Errorf("record sha256 of %q: %w", name, err)
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, "", err
	}
	cur.sum = sum
	a.mu.Lock()
	if a.verified == nil {
		a.verified = map[string]fileState{}
	}
	a.verified[name] = cur
	a.mu.Unlock()
	return f, sum, nil
}

// countingWriter counts body bytes for the fetch event.
type countingWriter struct {
	http.ResponseWriter
	n    int64
	code int
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) WriteHeader(code int) {
	c.code = code
	c.ResponseWriter.WriteHeader(code)
}

func (s *Server) artifact(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	var machine string
	if mac, err := resource.NormalizeMAC(r.URL.Query().Get("mac")); err == nil {
		if m, err := s.Inventory.MachineByMAC(ctx, mac); err == nil {
			machine = m.Metadata.Name
		}
	}
	s.serveArtifact(w, r, name, machine)
}

// serveArtifact serves the verified file of artifact name, with the fetch or the
// refusal on machine's timeline; it returns the status code sent.
func (s *Server) serveArtifact(w http.ResponseWriter, r *http.Request, name, machine string) int {
	ctx := r.Context()
	obj, err := s.Inventory.Get(ctx, "Artifact", name)
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, fmt.Sprintf("artifact %q not found", name), http.StatusNotFound)
		return http.StatusNotFound
	}
	if err != nil {
		s.Logger.Error("artifact lookup", "artifact", name, "err", err)
		http.Error(w, "inventory unavailable", http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	}
	spec, err := resource.Typed[resource.ArtifactSpec](obj)
	if err != nil {
		http.Error(w, "bad artifact record", http.StatusInternalServerError)
		return http.StatusInternalServerError
	}
	var f *os.File
	var sum string
	if strings.HasPrefix(spec.Source, "http://") || strings.HasPrefix(spec.Source, "https://") {
		// Served from Kiln's verified copy (remote.go), never by redirect. A copy
		// that changed on disk is fetched again, once.
		for try := 0; try < 2; try++ {
			var cp *resource.ArtifactSpec
			if cp, err = s.Artifacts.remote(ctx, obj, spec); err != nil {
				break
			}
			cp.Signature = spec.Signature
			if f, sum, err = s.Artifacts.open(ctx, obj, cp); !errors.Is(err, ErrDigestMismatch) {
				break
			}
			os.Remove(filepath.Join(s.Artifacts.Dir, cp.Source))
		}
		if err != nil && ctx.Err() != nil {
			return 0
		}
	} else {
		f, sum, err = s.Artifacts.open(ctx, obj, spec)
	}
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, os.ErrNotExist):
			code = http.StatusNotFound
		case errors.Is(err, ErrRemoteFetch):
			code = http.StatusBadGateway
		case errors.Is(err, ErrSignature):
			code = http.StatusForbidden
		}
		s.Logger.Error("artifact refused", "artifact", name, "machine", machine, "err", err)
		s.event(ctx, machine, "ArtifactRefused", fmt.Sprintf("%s: %v", name, err))
		http.Error(w, fmt.Sprintf("artifact %q cannot be served (see the server log)", name), code)
		return code
	}
	defer f.Close()
	st, _ := f.Stat()
	start := time.Now()
	w.Header().Set("ETag", `"`+sum+`"`)
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	cw := &countingWriter{ResponseWriter: w, code: http.StatusOK}
	http.ServeContent(cw, r, "", st.ModTime(), f)
	if r.Method == http.MethodGet && cw.code < 300 {
		s.event(ctx, machine, "ArtifactFetched", fmt.Sprintf("%s: %d bytes in %s over %s", name, cw.n, time.Since(start).Round(time.Millisecond), scheme(r)))
	}
	return cw.code
}
