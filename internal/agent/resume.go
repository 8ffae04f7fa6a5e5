package agent

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// maxResumes bounds how many times one download is resumed.
const maxResumes = 8

// resumingBody is a download that survives broken connections: when the body
// fails before its end, it asks the server for the rest with a Range request
// (bound to the same representation by its ETag, when the server gave one) and
// goes on reading, so that the decompressor and the running sha256 behind it
// never notice and a network blip costs a reconnection, not the gigabytes
// already written. A server that does not answer 206 from the right offset ends
// the download with the original error. Resuming without an ETag is allowed
// only when the whole download is verified by its sha256 anyway.
type resumingBody struct {
	ctx     context.Context
	get     func(ctx context.Context, offset int64, etag string) (io.ReadCloser, error)
	logf    func(format string, args ...any)
	etag    string
	total   int64 // the whole representation's length; -1: unknown
	allow   bool  // resuming is safe (an ETag, or a verified download)
	backoff time.Duration

	mu      sync.Mutex
	body    io.ReadCloser
	off     int64
	resumes int
	closed  bool
}

func (r *resumingBody) Read(p []byte) (int, error) {
	for {
		r.mu.Lock()
		body := r.body
		r.mu.Unlock()
		n, err := body.Read(p)
		r.mu.Lock()
		r.off += int64(n)
		off, closed := r.off, r.closed
		r.mu.Unlock()
		if err == nil || n > 0 {
			return n, nil // an error after data shows again on the next Read
		}
		if errors.Is(err, io.EOF) && (r.total < 0 || off >= r.total) {
			return 0, io.EOF
		}
		if closed || !r.allow || r.resumes >= maxResumes || r.ctx.Err() != nil {
			return 0, err
		}
		if rerr := r.resume(off); rerr != nil {
			r.logf("could not resume the download at %s: %v", agentwire.SizeText(off), rerr)
			return 0, err
		}
	}
}

// resume replaces the broken body with the rest of the representation.
func (r *resumingBody) resume(off int64) error {
	r.resumes++
	wait := r.backoff << (r.resumes - 1)
	select {
	case <-time.After(min(wait, 10*time.Second)):
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	nb, err := r.get(r.ctx, off, r.etag)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		nb.Close()
		return errors.New("closed")
	}
	r.body.Close()
	r.body = nb
	r.logf("connection lost after %s: resumed from there (resume %d of at most %d)", agentwire.SizeText(off), r.resumes, maxResumes)
	return nil
}

// Close closes the current body; a Read after it does not resume.
func (r *resumingBody) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.body.Close()
}

var _ io.ReadCloser = (*resumingBody)(nil)

// resumeBackoff is the pause before the first resumption; it doubles for each
// further one (up to 10 s).
var resumeBackoff = time.Second
