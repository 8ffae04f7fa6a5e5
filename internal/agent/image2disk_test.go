package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// testImage is a compressible pseudo-random disk image: runs of random bytes and
// zeros, like a real filesystem image.
func testImage(size int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, size)
	for off := 0; off < size; off += 64 << 10 {
		end := min(off+64<<10, size)
		if (off/(64<<10))%3 != 0 {
			for i := off; i < end; i += 8 {
				v := r.Uint64()
				for j := 0; j < 8 && i+j < end; j++ {
					b[i+j] = byte(v >> (8 * j))
				}
			}
		}
	}
	return b
}

func compress(t testing.TB, comp string, data []byte) []byte {
	var b bytes.Buffer
	var w io.WriteCloser
	switch comp {
	case CompressionNone:
		return data
	case CompressionGzip:
		w = gzip.NewWriter(&b)
	case CompressionZstd:
		w, _ = zstd.NewWriter(&b)
	case CompressionXz:
		var err error
		if w, err = xz.NewWriter(&b); err != nil {
			t.Fatal(err)
		}
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestDetectCompression(t *testing.T) {
	img := testImage(64 << 10)
	for _, c := range []string{CompressionNone, CompressionGzip, CompressionZstd, CompressionXz} {
		if got := DetectCompression(compress(t, c, img)[:16]); got != c {
			t.Errorf("%s detected as %s", c, got)
		}
	}
	if DetectCompression([]byte("BZh91AY&SY")) != "bzip2" || DetectCompression(nil) != CompressionNone {
		t.Error("bzip2 / empty")
	}
}

type nopCloser struct{ io.Reader }

func (nopCloser) Close() error { return nil }

func TestWriteImageRoundTrip(t *testing.T) {
	for _, c := range []string{CompressionNone, CompressionGzip, CompressionZstd, CompressionXz} {
		img := testImage(9<<20 + 12345) // not a multiple of the chunk size
		if c == CompressionXz {
			img = img[:1<<20+12345] // the pure-Go xz encoder is slow
		}
		z := compress(t, c, img)
		for _, given := range []string{CompressionAuto, c} {
			t.Run(c+"/"+given, func(t *testing.T) {
				var out bytes.Buffer
				var progress []int64
				res, err := WriteImage(context.Background(), &out, nopCloser{bytes.NewReader(z)},
					ImageOptions{Compression: given, Total: int64(len(z)), ChunkSize: 256 << 10, Progress: func(n int64) { progress = append(progress, n) }})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out.Bytes(), img) {
					t.Fatalf("wrote %d bytes, not the image (%d)", out.Len(), len(img))
				}
				if res.SHA256 != sum(z) || res.Read != int64(len(z)) || res.Written != int64(len(img)) || res.Compression != c {
					t.Errorf("result %+v", res)
				}
				if len(progress) == 0 || progress[len(progress)-1] != int64(len(z)) {
					t.Errorf("progress %v", progress)
				}
			})
		}
	}
}

func TestWriteImageRefusesWrongCompression(t *testing.T) {
	z := compress(t, CompressionGzip, testImage(1<<20))
	_, err := WriteImage(context.Background(), io.Discard, nopCloser{bytes.NewReader(z)}, ImageOptions{Compression: CompressionZstd})
	if err == nil || !strings.Contains(err.Error(), "starts like gzip") {
		t.Fatalf("err = %v", err)
	}
}

// imageServer serves test images, and broken ones.
type imageServer struct {
	*httptest.Server
	files map[string][]byte
	mu    sync.Mutex
	hits  map[string]int
	// ranges records the Range headers of flaky/ requests.
	ranges []string
}

func (s *imageServer) hitCount(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[name]
}

func newImageServer(t testing.TB) *imageServer {
	s := &imageServer{files: map[string][]byte{}, hits: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		s.mu.Lock()
		s.hits[name]++
		s.mu.Unlock()
		file := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(name, "truncated/"), "slow/"), "flaky/")
		data, ok := s.files[file]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if strings.HasPrefix(name, "flaky/") {
			// Every response breaks off after 1.5 MiB; Range requests (bound by
			// If-Match to the ETag) are served from their offset, as a file server
			// or Kiln's artifact endpoint does.
			s.mu.Lock()
			s.ranges = append(s.ranges, r.Header.Get("Range")+" "+r.Header.Get("If-Match"))
			s.mu.Unlock()
			w.Header().Set("ETag", `"v1-`+file+`"`)
			bw := &breakingWriter{ResponseWriter: w, left: 3 << 19}
			http.ServeContent(bw, r, file, time.Time{}, bytes.NewReader(data))
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		switch {
		case strings.HasPrefix(name, "truncated/"):
			// Send half of what Content-Length promised, then drop the connection.
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case strings.HasPrefix(name, "slow/"):
			for off := 0; off < len(data); off += 256 << 10 {
				if _, err := w.Write(data[off:min(off+256<<10, len(data))]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(50 * time.Millisecond)
			}
		default:
			w.Write(data)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// breakingWriter drops the connection once left bytes are written.
type breakingWriter struct {
	http.ResponseWriter
	left int
}

func (b *breakingWriter) Write(p []byte) (int, error) {
	if len(p) >= b.left {
		n, _ := b.ResponseWriter.Write(p[:b.left])
		b.ResponseWriter.(http.Flusher).Flush()
		if conn, _, err := b.ResponseWriter.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		b.left = 0
		return n, errors.New("connection dropped")
	}
	b.left -= len(p)
	return b.ResponseWriter.Write(p)
}

func testEnv(t testing.TB, sys *System) *Env {
	return &Env{System: sys, Action: "test", Attempt: 1, logger: slog.New(slog.DiscardHandler), rep: &reporter{}}
}

func diskFile(t testing.TB, size int64) string {
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// Something old on the disk, to see it wiped.
	f.Write(bytes.Repeat([]byte{0xAA}, 1<<20))
	f.WriteAt(bytes.Repeat([]byte{0xBB}, 1<<20), size-1<<20)
	f.Truncate(size)
	f.Close()
	return p
}

func TestImage2Disk(t *testing.T) {
	defer func(b time.Duration) { resumeBackoff = b }(resumeBackoff)
	resumeBackoff = 5 * time.Millisecond // the truncated cases try to resume first
	img := testImage(6 << 20)
	srv := newImageServer(t)
	srv.files["img.zst"] = compress(t, CompressionZstd, img)
	srv.files["img.raw"] = img
	good := sum(srv.files["img.zst"])
	sys := &System{AllowRegularFiles: true}

	cases := []struct {
		name, path, sha string
		args            map[string]any
		wantErr         string
		permanent       bool
		untouched       bool // failed before writing anything
	}{
		{name: "zstd", path: "img.zst", sha: good},
		{name: "raw", path: "img.raw", sha: sum(img)},
		{name: "404", path: "missing.raw", sha: good, wantErr: "404 Not Found", untouched: true},
		{name: "truncated", path: "truncated/img.raw", sha: sum(img), wantErr: "truncated"},
		{name: "truncated zstd", path: "truncated/img.zst", sha: good, wantErr: "truncated"},
		{name: "sha mismatch", path: "img.raw", sha: good, wantErr: "sha256 mismatch"},
		{name: "no sha", path: "img.raw", wantErr: "args.sha256: required", permanent: true},
		{name: "bad compression", path: "img.raw", sha: sum(img), args: map[string]any{"compression": "lzma"}, wantErr: "args.compression", permanent: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			disk := diskFile(t, 16<<20)
			args := Args{"disk": disk, "imageURL": srv.URL + "/" + c.path}
			if c.sha != "" {
				args["sha256"] = c.sha
			}
			for k, v := range c.args {
				args[k] = v
			}
			env := testEnv(t, sys)
			err := image2disk(context.Background(), env, args)
			got, _ := os.ReadFile(disk)
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got[:len(img)], img) {
					t.Fatal("the disk does not hold the image")
				}
				if p := env.rep.lastProgress(); p == nil || p.Percent != 100 {
					t.Errorf("progress %+v", p)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
			if errors.Is(err, errPermanent) != c.permanent {
				t.Errorf("permanent = %v, want %v", errors.Is(err, errPermanent), c.permanent)
			}
			if c.permanent || c.untouched {
				if got[0] != 0xAA || got[len(got)-1] != 0xBB {
					t.Error("the disk was changed by an action that failed before writing")
				}
				return
			}
			// Failed after writing started (or could have): nothing bootable is left.
			if !bytes.Equal(got[:1<<20], make([]byte, 1<<20)) || !bytes.Equal(got[len(got)-1<<20:], make([]byte, 1<<20)) {
				t.Error("the first and last MiB were not wiped")
			}
		})
	}
}

// TestImage2DiskResumes: a download whose connection breaks every 1.5 MiB is
// resumed with Range requests from where it broke, bound to the first
// response's ETag, through the decompressor and the running sha256: the image
// is written whole and verified in one attempt.
func TestImage2DiskResumes(t *testing.T) {
	defer func(b time.Duration) { resumeBackoff = b }(resumeBackoff)
	resumeBackoff = 5 * time.Millisecond
	img := testImage(6 << 20)
	srv := newImageServer(t)
	srv.files["img.zst"] = compress(t, CompressionZstd, img)
	srv.files["img.raw"] = img
	sys := &System{AllowRegularFiles: true}
	for _, name := range []string{"img.raw", "img.zst"} {
		t.Run(name, func(t *testing.T) {
			srv.mu.Lock()
			srv.ranges = nil
			srv.mu.Unlock()
			disk := diskFile(t, 16<<20)
			env := testEnv(t, sys)
			err := image2disk(context.Background(), env, Args{"disk": disk, "imageURL": srv.URL + "/flaky/" + name, "sha256": sum(srv.files[name])})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(disk)
			if !bytes.Equal(got[:len(img)], img) {
				t.Fatal("the disk does not hold the image")
			}
			srv.mu.Lock()
			ranges := slices.Clone(srv.ranges)
			srv.mu.Unlock()
			n := len(srv.files[name])
			if want := (n + 3<<19 - 1) / (3 << 19); len(ranges) != want {
				t.Fatalf("%d requests for %d bytes broken every 1.5 MiB, want %d: %q", len(ranges), n, want, ranges)
			}
			for i, r := range ranges[1:] {
				want := fmt.Sprintf("bytes=%d- \"v1-%s\"", (i+1)*(3<<19), name)
				if r != want {
					t.Errorf("request %d: %q, want %q", i+2, r, want)
				}
			}
			if logs := strings.Join(env.rep.takeLogs(-1), "\n"); !strings.Contains(logs, "resumed from there") {
				t.Errorf("no resumption in the action's log:\n%s", logs)
			}
		})
	}
}

func TestImage2DiskRefusesNonDisks(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "file")
	os.WriteFile(f, nil, 0o644)
	for _, p := range []string{dir, f, "/dev/null"} {
		err := image2disk(context.Background(), testEnv(t, &System{}), Args{"disk": p, "imageURL": "http://127.0.0.1:1/x", "sha256": strings.Repeat("0", 64)})
		if !errors.Is(err, errNotWholeDisk) || !errors.Is(err, errPermanent) {
			t.Errorf("%s: err = %v", p, err)
		}
	}
}

func TestImage2DiskIdleAndTimeout(t *testing.T) {
	stall := make(chan struct{})
	defer close(stall)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10000000")
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	sys := &System{AllowRegularFiles: true}
	args := Args{"disk": diskFile(t, 4<<20), "imageURL": srv.URL, "sha256": strings.Repeat("0", 64), "idleTimeout": "300ms"}
	start := time.Now()
	err := image2disk(context.Background(), testEnv(t, sys), args)
	if err == nil || !strings.Contains(err.Error(), "no data for 300ms") || time.Since(start) > 5*time.Second {
		t.Fatalf("idle: err = %v after %s", err, time.Since(start))
	}
	delete(args, "idleTimeout")
	ctx, cancel := context.WithTimeoutCause(context.Background(), 300*time.Millisecond, errActionTimeout)
	defer cancel()
	err = image2disk(ctx, testEnv(t, sys), args)
	if !errors.Is(err, errActionTimeout) {
		t.Fatalf("timeout: err = %v", err)
	}
}

// BenchmarkImage2Disk measures WriteImage from a local HTTP server to a file: the
// agent's part of provisioning. 256 MiB by default (KILN_BENCH_IMAGE_MB to change);
// scripts/bench-image2disk.sh compares 1 GiB on a loop device with curl | dd.
func BenchmarkImage2Disk(b *testing.B) {
	mb := 256
	if v, err := strconv.Atoi(os.Getenv("KILN_BENCH_IMAGE_MB")); err == nil && v > 0 {
		mb = v
	}
	img := testImage(mb << 20)
	srv := newImageServer(b)
	srv.files["img.raw"] = img
	srv.files["img.zst"] = compress(b, CompressionZstd, img)
	srv.files["img.gz"] = compress(b, CompressionGzip, img)
	for _, c := range []string{"raw", "zst", "gz"} {
		b.Run(c, func(b *testing.B) {
			disk := filepath.Join(b.TempDir(), "disk")
			os.WriteFile(disk, nil, 0o644)
			args := Args{"disk": disk, "imageURL": srv.URL + "/img." + c, "sha256": sum(srv.files["img."+c])}
			b.SetBytes(int64(len(img)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := image2disk(context.Background(), testEnv(b, &System{AllowRegularFiles: true}), args); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	_ = fmt.Sprint
}
