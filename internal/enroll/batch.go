package enroll

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

// Group commit. Writers are serialized (one SQLite writer; an advisory lock on
// PostgreSQL), so enrollments arriving together share one write transaction: the
// fixed cost of a transaction (BEGIN, the write lock, COMMIT and its page writes, and
// on PostgreSQL three round trips) is paid once per batch. Each enrollment in a batch
// sees the ones before it (a token's use count included). A refused enrollment writes
// nothing, so it does not spoil its batch; an enrollment that fails otherwise makes
// the batch roll back, and its enrollments are then run one transaction each. Under
// load a batch waits up to a millisecond for the enrollments on their way (see run).

// maxBatch bounds the enrollments in one transaction. A batch waits up to
// batchLinger for enrollments on their way.
const (
	maxBatch    = 64
	batchLinger = time.Millisecond
)

type batchItem struct {
	ctx  context.Context
	e    *enrollment
	resp *EnrollResponse
	err  error
	done chan struct{}
}

// batcher runs one committing goroutine, started on first use.
type batcher struct {
	once  sync.Once
	queue chan *batchItem
	// preparing counts the enrollments between their arrival and their submission
	// (see Server.enroll): the batches to come.
	preparing atomic.Int64
}

func (b *batcher) submit(ctx context.Context, s *Server, e *enrollment) (*EnrollResponse, error) {
	b.once.Do(func() {
		b.queue = make(chan *batchItem, 4*maxBatch)
		go b.run(s)
	})
	it := &batchItem{ctx: ctx, e: e, done: make(chan struct{})}
	select {
	case b.queue <- it:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Once queued, the enrollment is committed or refused whether or not the caller
	// still waits: a client that went away finds its machine enrolled.
	<-it.done
	return it.resp, it.err
}

func (b *batcher) run(s *Server) {
	for first := range b.queue {
		batch := []*batchItem{first}
		var linger <-chan time.Time
	fill:
		for len(batch) < maxBatch {
			select {
			case it := <-b.queue:
				batch = append(batch, it)
				continue
			default:
			}
			// Nothing queued. If enrollments are on their way (being checked and
			// signed), wait a little for them, so that they share the commit, which
			// costs as much as a few enrollments; else commit at once.
			if b.preparing.Load() == 0 {
				break
			}
			if linger == nil {
				linger = time.After(batchLinger)
			}
			select {
			case it := <-b.queue:
				batch = append(batch, it)
			case <-linger:
				break fill
			}
		}
		s.commitBatch(batch)
	}
}

// commitBatch commits a batch, falling back to one transaction per enrollment if it
// cannot commit as a whole.
func (s *Server) commitBatch(batch []*batchItem) {
	defer func() {
		for _, it := range batch {
			close(it.done)
		}
	}()
	// The transaction outlives any one caller: it is not tied to a request's context.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := s.st.Update(ctx, func(tx store.Tx) error {
		br := newBatchReads()
		for _, it := range batch {
			it.resp, it.err = s.commitOne(ctx, tx, br, it.e)
			var ref *Refusal
			if errors.As(it.err, &ref) && !ref.partial || errors.Is(it.err, errProfileChanged) {
				continue
			}
			if it.err != nil {
				return it.err
			}
		}
		return br.flush(ctx, tx)
	})
	if err == nil {
		return
	}
	if len(batch) == 1 {
		batch[0].resp, batch[0].err = nil, err
		return
	}
	for _, it := range batch {
		var resp *EnrollResponse
		err := s.st.Update(ctx, func(tx store.Tx) error {
			var err error
			resp, err = s.commitOne(ctx, tx, nil, it.e)
			return err
		})
		it.resp, it.err = resp, err
		if err != nil {
			it.resp = nil
		}
	}
}
