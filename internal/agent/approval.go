package agent

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// Waiting for an operator's approval. Kiln answered the enrollment with 202: it keeps
// the request pending until an operator approves or denies it. The agent polls with a
// new CSR for the same key, bound to the poll's own connection (the proof that it is
// the requester; see the enroll package's approval.go), backing off from
// PollInterval to maxPollInterval, until it gets its certificate, or Kiln says the
// request was denied, expired or is unknown: then it stops with that reason.

const (
	defaultPollInterval = 5 * time.Second
	maxPollInterval     = time.Minute
)

// pendingAnswer is Kiln's 202: the enrollment waits for an operator.
type pendingAnswer struct{ agentwire.EnrollPending }

func (p *pendingAnswer) Error() string {
	return fmt.Sprintf("enrollment request %s waits for an operator's approval", p.ID)
}

// ErrEnrollmentDecided wraps the end of a request that will not be approved
// (denied, expired, unknown): enrolling again needs an operator or a token.
var ErrEnrollmentDecided = errors.New("enrollment request closed")

// waitForApproval polls a pending request until it is decided.
func waitForApproval(ctx context.Context, opts EnrollOptions, u *url.URL, fp string, key *ecdsa.PrivateKey, p *agentwire.EnrollPending) (*Identity, error) {
	wait := cmp.Or(opts.PollInterval, time.Duration(p.RetryAfterSeconds)*time.Second, defaultPollInterval)
	id := p.ID
	for {
		if opts.OnPending != nil {
			opts.OnPending(*p)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("wait for approval of enrollment request %s: %w", id, ctx.Err())
		case <-t.C:
		}
		wait = min(wait*3/2, maxPollInterval)
		ident, next, err := postBoundCSR(ctx, opts, u, fp, key, agentwire.EnrollRequestPath(id), func(csr string) any {
			return agentwire.EnrollPollRequest{CSR: csr}
		})
		switch {
		case next != nil && next.State == agentwire.EnrollmentTPMEvidence:
			// Approved: the EK is pinned, and the certificate comes from attesting.
			return nil, &pendingAnswer{*next}
		case next != nil:
			p = next
		case err == nil:
			return ident, nil
		default:
			var se *ServerError
			if errors.As(err, &se) && se.Status != http.StatusServiceUnavailable && se.Status != http.StatusTooManyRequests && se.Status < 500 {
				return nil, fmt.Errorf("%w: %s: %w", ErrEnrollmentDecided, id, err)
			}
			// Kiln unreachable or busy: keep waiting, the request stays.
		}
	}
}
