package watch

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Defaults of Options.
const (
	// DefaultPoll is how often a broker reads its log for what other replicas
	// wrote: the delay a watcher on one replica sees for a write through another.
	DefaultPoll = 250 * time.Millisecond
	// DefaultBuffer is how many messages the broker keeps for its watchers, so how
	// far one may fall behind before it is dropped: a boot storm's burst.
	DefaultBuffer = 4096
	// readBatch is how many messages one read of a log returns at most.
	readBatch = 512
)

var (
	// ErrDropped: the watcher fell more than the broker's buffer behind; the client
	// resumes from the last id it received.
	ErrDropped = errors.New("watcher fell behind and was dropped: resume from the last id received")
	// ErrClosed: the broker stopped (the server is shutting down).
	ErrClosed = errors.New("the event stream stopped: the server is shutting down")
)

// Options tune a Broker; the zero value takes the defaults.
type Options struct {
	Poll   time.Duration
	Buffer int
	Logger *slog.Logger
	// Dropped, if set, is called when a watcher is dropped (a metric).
	Dropped func()
}

// Broker reads one log and hands its messages to the watchers. The newest
// messages are in one ring that every watcher reads at its own pace, so a
// watcher costs a cursor, not a buffer, and a writer never waits for one; one
// that falls a whole ring behind is dropped.
type Broker struct {
	log     Log
	notify  store.CommitNotifier // nil: poll only
	poll    time.Duration
	logger  *slog.Logger
	dropped func()

	ready     chan struct{} // closed once cursor holds the log's head
	mu        sync.Mutex
	cursor    int64      // the newest message ID in the ring (or the head at start)
	ring      []*Message // message number n is at ring[n%len(ring)]
	published int64      // how many messages went into the ring
	wake      chan struct{}
	watchers  map[*Watcher]struct{}
	closed    bool
}

// NewBroker returns a broker for l; notify (may be nil) wakes it at this
// process's commits. Run must run for watches to be served.
func NewBroker(l Log, notify store.CommitNotifier, opts Options) *Broker {
	return &Broker{
		log: l, notify: notify,
		poll:     cmp.Or(opts.Poll, DefaultPoll),
		ring:     make([]*Message, max(cmp.Or(opts.Buffer, DefaultBuffer), 1)),
		logger:   cmp.Or(opts.Logger, slog.New(slog.DiscardHandler)),
		dropped:  opts.Dropped,
		ready:    make(chan struct{}),
		wake:     make(chan struct{}),
		watchers: map[*Watcher]struct{}{},
	}
}

// Run reads the log until ctx ends, then ends every watch (ErrClosed).
func (b *Broker) Run(ctx context.Context) error {
	defer b.close()
	tick := time.NewTicker(b.poll)
	defer tick.Stop()
	for {
		head, _, err := b.log.Marks(ctx)
		if err == nil {
			b.mu.Lock()
			b.cursor = head
			b.mu.Unlock()
			close(b.ready)
			break
		}
		b.logger.Warn("watch: read the log's head", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	for {
		// Take the signal before reading: a commit during the read then wakes the
		// next round instead of waiting for the poll.
		var committed <-chan struct{}
		if b.notify != nil {
			committed = b.notify.Committed()
		}
		if err := b.readNew(ctx); err != nil && ctx.Err() == nil {
			b.logger.Warn("watch: read the log", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-committed:
		}
	}
}

// readNew hands out everything after the cursor.
func (b *Broker) readNew(ctx context.Context) error {
	for {
		b.mu.Lock()
		after := b.cursor
		b.mu.Unlock()
		msgs, err := b.log.Read(ctx, after, readBatch, &Filter{})
		if err != nil {
			return err
		}
		b.publish(msgs)
		if len(msgs) < readBatch {
			return nil
		}
	}
}

func (b *Broker) publish(msgs []Message) {
	if len(msgs) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range msgs {
		b.ring[b.published%int64(len(b.ring))] = &msgs[i]
		b.published++
		b.cursor = msgs[i].ID
	}
	close(b.wake)
	b.wake = make(chan struct{})
}

func (b *Broker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	close(b.wake)
	b.wake = make(chan struct{})
}

// Watchers returns how many watchers are attached.
func (b *Broker) Watchers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.watchers)
}

// Head returns the newest sequence of the log (for a watch that starts now).
func (b *Broker) Head(ctx context.Context) (int64, error) {
	head, _, err := b.log.Marks(ctx)
	return head, err
}

// Watch starts a watch of the messages f matches with ID > after. ErrGone if
// retention removed messages after it.
func (b *Broker) Watch(ctx context.Context, after int64, f Filter) (*Watcher, error) {
	select {
	case <-b.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_, floor, err := b.log.Marks(ctx)
	if err != nil {
		return nil, err
	}
	if after < floor {
		return nil, ErrGone
	}
	w := &Watcher{b: b, filter: f, scan: after, last: after}
	if f.Kind != "" && !f.Selector.Empty() {
		w.selection = make(map[string]struct{}, len(f.Selected))
		for _, name := range f.Selected {
			w.selection[name] = struct{}{}
		}
		if f.Resumed {
			w.replayed = map[string]struct{}{}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	w.live, w.pos = b.cursor, b.published
	b.watchers[w] = struct{}{}
	return w, nil
}

// Watcher is one watch: first the messages between its start and the broker's
// cursor when it joined (read from the store), then the live ones from the ring.
type Watcher struct {
	b      *Broker
	filter Filter

	pos     int64 // the next message number to read from the ring
	scan    int64 // the backlog is read up to here
	live    int64 // the backlog ends here: the ring has what follows
	last    int64 // the newest ID handed to the caller
	pending []Message
	// selection holds the names of the objects in the selection the client has
	// seen (under a label selector only; nil otherwise).
	selection map[string]struct{}
	// replayed holds the objects a resumed watch has replayed a write of (see
	// Filter.Resumed); nil when the watch is not resumed.
	replayed map[string]struct{}
}

// Next returns the next message. It returns (nil, nil) when idle fires first (a
// keepalive is due), ErrDropped when the watcher fell behind, ErrGone when
// retention removed part of the backlog while it was read, ErrClosed when the
// broker stopped.
func (w *Watcher) Next(ctx context.Context, idle <-chan time.Time) (*Message, error) {
	for len(w.pending) == 0 && w.scan < w.live {
		if err := w.readBacklog(ctx); err != nil {
			return nil, err
		}
	}
	if len(w.pending) > 0 {
		m := &w.pending[0]
		w.pending = w.pending[1:]
		w.last = m.ID
		return m, nil
	}
	for {
		m, wake, err := w.fromRing()
		if err != nil {
			return nil, err
		}
		if m != nil {
			return m, nil
		}
		select {
		case <-wake:
		case <-idle:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// fromRing returns the next matching message in the ring, or the channel that
// is closed when more arrive.
func (w *Watcher) fromRing() (*Message, <-chan struct{}, error) {
	b := w.b
	b.mu.Lock()
	defer b.mu.Unlock()
	size := int64(len(b.ring))
	if b.published-w.pos > size {
		if _, ok := b.watchers[w]; ok {
			delete(b.watchers, w)
			b.logger.Info("watch: dropped a watcher that fell behind", "buffer", size)
			if b.dropped != nil {
				b.dropped()
			}
		}
		return nil, nil, ErrDropped
	}
	for ; w.pos < b.published; w.pos++ {
		m := b.ring[w.pos%size]
		// IDs up to last: the watch started after them (a replica ahead of this
		// one's broker).
		if m.ID <= w.last {
			continue
		}
		if w.selection == nil { // the common case: no copy of the shared message
			if w.filter.Match(m) {
				w.pos++
				w.last = m.ID
				return m, nil, nil
			}
			continue
		}
		if out, ok := w.pass(*m); ok {
			w.pos++
			w.last = m.ID
			return &out, nil, nil
		}
	}
	if b.closed {
		return nil, nil, ErrClosed
	}
	return nil, b.wake, nil
}

// pass reports whether the watcher passes m on, and as what. Under a label
// selector the watcher follows the selection: a change of an object in it that no
// longer matches is passed on as DELETED (the object as it now is), one of an
// object outside it that now matches as ADDED. m is a copy: the ring's messages
// are shared by every watcher.
func (w *Watcher) pass(m Message) (Message, bool) {
	if w.selection == nil {
		return m, w.filter.Match(&m)
	}
	kindOnly := w.filter
	kindOnly.Selector = resource.Selector{}
	if !kindOnly.Match(&m) {
		return m, false
	}
	_, had := w.selection[m.Name]
	matches := w.filter.Selector.Matches(m.Labels)
	if w.replayed != nil && m.ID <= w.live {
		// Between the client's version and now: the client may hold the object,
		// so its first write here passes as it is, or as DELETED if it left.
		if _, seen := w.replayed[m.Name]; !seen {
			w.replayed[m.Name] = struct{}{}
			had = true
		}
	}
	switch {
	case m.Type == store.ChangeDeleted:
		delete(w.selection, m.Name)
		return m, had || matches
	case matches:
		w.selection[m.Name] = struct{}{}
		if !had {
			m.Type = store.ChangeAdded
		}
		return m, true
	case had:
		delete(w.selection, m.Name)
		m.Type = store.ChangeDeleted
		return m, true
	}
	return m, false
}

// pendingNow reports whether Next would return without waiting.
func (w *Watcher) pendingNow() bool {
	if len(w.pending) > 0 {
		return true
	}
	w.b.mu.Lock()
	defer w.b.mu.Unlock()
	return w.pos < w.b.published
}

func (w *Watcher) readBacklog(ctx context.Context) error {
	msgs, err := w.b.log.Read(ctx, w.scan, readBatch, &w.filter)
	if err != nil {
		return err
	}
	// Retention may have run during the read: then rows in the gap may be gone.
	if _, floor, err := w.b.log.Marks(ctx); err != nil {
		return err
	} else if w.scan < floor {
		return ErrGone
	}
	for i := range msgs {
		m := msgs[i]
		if m.ID > w.live {
			break
		}
		w.scan = m.ID
		if out, ok := w.pass(m); ok {
			w.pending = append(w.pending, out)
		}
	}
	if len(msgs) < readBatch || w.scan < msgs[len(msgs)-1].ID {
		w.scan = w.live // read to the end, or past where the live messages start
	}
	return nil
}

// Close ends the watch.
func (w *Watcher) Close() {
	w.b.mu.Lock()
	defer w.b.mu.Unlock()
	delete(w.b.watchers, w)
}

// Last returns the newest ID handed to the caller (the watch's start before any).
func (w *Watcher) Last() int64 { return w.last }
