package enroll

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

// Tests of the group commit's batching (batch.go's batcher.run and submit), run in
// a synctest bubble so that "queued", "lingering" and "committed" are observed
// exactly, with no sleeps on the real clock: mutants of the gremlins run at 2c867e0
// that no test caught (TESTING.md, internal/enroll).

// steppedStore is a store whose write transactions each wait for a step (or for
// released to close), then commit nothing: a test sees each batch's transaction
// begin (calls) and lets it end when it chooses.
type steppedStore struct {
	store.Store
	calls    atomic.Int32
	step     chan struct{}
	released chan struct{}
}

func (s *steppedStore) Update(context.Context, func(store.Tx) error) error {
	s.calls.Add(1)
	select {
	case <-s.step:
	case <-s.released:
	}
	return nil
}

// batchRig is a batcher on a steppedStore, with the submissions it made.
type batchRig struct {
	t    *testing.T
	b    *batcher
	srv  *Server
	st   *steppedStore
	done atomic.Int32 // submissions returned
	errs chan error   // their errors, in the order they returned
}

// newBatchRig must be called inside the bubble (its channels belong to it). When
// the test ends, every transaction is let through and the committing goroutine
// stopped, so that the bubble ends. (After a failure the goroutine is left: a
// batcher that misbehaves may be lingering, and would take the closed queue's
// zero values for enrollments; synctest then reports the goroutine left, after
// the failure.)
func newBatchRig(t *testing.T) *batchRig {
	st := &steppedStore{step: make(chan struct{}), released: make(chan struct{})}
	r := &batchRig{t: t, b: &batcher{}, srv: &Server{st: st}, st: st, errs: make(chan error, 1000)}
	t.Cleanup(func() {
		close(st.released)
		synctest.Wait()
		if r.b.queue != nil && !t.Failed() {
			close(r.b.queue)
		}
	})
	return r
}

// submit submits n enrollments with ctx, each from its own goroutine, and waits
// until every goroutine of the bubble is blocked (queued, or committing).
func (r *batchRig) submit(ctx context.Context, n int) {
	for range n {
		go func() {
			_, err := r.b.submit(ctx, r.srv, &enrollment{})
			r.done.Add(1)
			r.errs <- err
		}()
	}
	synctest.Wait()
}

// commitNext lets the transaction under way end and waits for what follows.
func (r *batchRig) commitNext() {
	r.st.step <- struct{}{}
	synctest.Wait()
}

// check compares the transactions begun and the submissions returned.
func (r *batchRig) check(what string, calls, done int) {
	r.t.Helper()
	if c, d := int(r.st.calls.Load()), int(r.done.Load()); c != calls || d != done {
		r.t.Fatalf("%s: %d transactions begun and %d enrollments returned, want %d and %d", what, c, d, calls, done)
	}
}

// TestBatcherBatchSize: enrollments queued while a transaction is under way go
// into the next one, at most maxBatch to a transaction.
func TestBatcherBatchSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newBatchRig(t)
		r.submit(t.Context(), 1)
		r.check("one enrollment, nothing on its way", 1, 0)
		r.submit(t.Context(), maxBatch+1)
		r.check("more queued while the first commits", 1, 0)
		r.commitNext()
		r.check("first committed", 2, 1)
		r.commitNext()
		r.check("a full batch committed", 3, 1+maxBatch)
		r.commitNext()
		r.check("the one left over committed", 3, maxBatch+2)
	})
}

// TestBatcherQueuedEnrollmentOutlivesItsCaller: an enrollment queued behind a
// transaction under way is committed even if its caller goes away: the queue
// takes it at once rather than making it wait for the committer.
func TestBatcherQueuedEnrollmentOutlivesItsCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newBatchRig(t)
		r.submit(t.Context(), 1)
		ctx, cancel := context.WithCancel(t.Context())
		r.submit(ctx, 1)
		cancel()
		synctest.Wait()
		r.check("the second caller went away while the first commits", 1, 0)
		r.commitNext()
		r.commitNext()
		r.check("both committed", 2, 2)
		for range 2 {
			if err := <-r.errs; err != nil {
				t.Errorf("submission: %v", err)
			}
		}
	})
}

// TestBatcherLinger: with no enrollment on its way a batch commits at once; with
// one on its way it waits up to batchLinger for it, and the two commit together.
func TestBatcherLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newBatchRig(t)
		r.submit(t.Context(), 1)
		r.check("nothing on its way", 1, 0)
		r.commitNext()
		r.check("committed", 1, 1)

		r.b.preparing.Add(1)
		r.submit(t.Context(), 1)
		r.check("one on its way", 1, 1)
		r.submit(t.Context(), 1)
		r.check("it arrived: the batch waits out batchLinger", 1, 1)
		time.Sleep(batchLinger)
		synctest.Wait()
		r.check("after batchLinger", 2, 1)
		r.commitNext()
		r.check("the two committed together", 2, 3)
	})
}

// TestBatchWritesEveryTokenItUsed: a batch whose enrollments use different join
// tokens writes the use count of each of them.
func TestBatchWritesEveryTokenItUsed(t *testing.T) {
	e := newEnv(t)
	toks := []string{e.token(TokenRequest{MaxUses: 5}), e.token(TokenRequest{MaxUses: 5}), e.token(TokenRequest{MaxUses: 5})}
	var batch []*batchItem
	for i, mac := range []string{"52:54:00:c4:00:01", "52:54:00:c4:00:02", "52:54:00:c4:00:03", "52:54:00:c4:00:04"} {
		batch = append(batch, &batchItem{e: e.pendingEnrollment(toks[i%len(toks)], mac), done: make(chan struct{})})
	}
	e.srv.commitBatch(batch)
	for i, it := range batch {
		if it.err != nil || it.resp == nil {
			t.Fatalf("enrollment %d: %v", i, it.err)
		}
	}
	for i, want := range []int{2, 1, 1} {
		if got := e.tokenUses(tokenID(t, toks[i])); got != want {
			t.Errorf("token %d: %d uses stored, want %d", i, got, want)
		}
	}
}
