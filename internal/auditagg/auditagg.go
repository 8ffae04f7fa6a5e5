// Package auditagg turns repeated refusals into few audit entries. The first
// refusal of a kind (action, source address, reason) in an interval is written at
// once, so that an operator debugging one machine sees it; the repeats within that
// interval are only counted, and written as one entry with the count when the
// interval ends or the server stops. A flood from one address then costs two rows
// per minute instead of one per request, and the pending counts take bounded memory.
package auditagg

import (
	"cmp"
	"context"
	"sync"
	"time"
)

// Key is what refusals are aggregated by. Every field is server-chosen text or a
// capped, escaped client value (the caller's duty): a key is kept in memory.
type Key struct {
	Action string // audit action, "enroll-refused"
	Source string // the client's address
	Reason string // what was refused and why
	// Kind and Name are the audit entry's object; Machine, if set, also gets an
	// event of type EventType on its timeline.
	Kind, Name, Machine, EventType string
}

// Record is one entry to write: Count refusals of Key between First and Last.
// Count 1 with Repeat false is a first refusal, written as it happened.
type Record struct {
	Key
	Count       int
	First, Last time.Time
	// Repeat: these are the repeats of a refusal already written in this interval.
	Repeat bool
}

// DefaultInterval is how long repeats of one refusal are counted before one entry
// records them.
const DefaultInterval = time.Minute

// DefaultMaxKeys bounds the refusals tracked at once; beyond it, new kinds are
// counted together per action under OverflowSource.
const DefaultMaxKeys = 10000

// OverflowSource is the Source of the key that counts refusals arriving while
// MaxKeys others are tracked.
const OverflowSource = "(many sources)"

// Aggregator counts refusals and writes them through Write.
type Aggregator struct {
	// Write stores one record (an audit entry, an event); it must not call back.
	Write func(ctx context.Context, r Record) error
	// Interval: DefaultInterval if 0. MaxKeys: DefaultMaxKeys if 0.
	Interval time.Duration
	MaxKeys  int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnError, if set, hears of records that could not be written.
	OnError func(r Record, err error)

	mu      sync.Mutex
	pending map[Key]*window
}

type window struct {
	start, last time.Time
	repeats     int
	firstRepeat time.Time
}

func (a *Aggregator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Aggregator) interval() time.Duration {
	if a.Interval > 0 {
		return a.Interval
	}
	return DefaultInterval
}

// Note counts one refusal, writing it at once if it is the first of its key in
// the current interval.
func (a *Aggregator) Note(ctx context.Context, k Key) {
	now := a.now()
	a.mu.Lock()
	if a.pending == nil {
		a.pending = map[Key]*window{}
	}
	w, ok := a.pending[k]
	if !ok && len(a.pending) >= cmp.Or(a.MaxKeys, DefaultMaxKeys) {
		// Full: count it with the other overflow of its action, never write at once
		// (a flood of distinct sources must not become a flood of rows).
		k = Key{Action: k.Action, Source: OverflowSource, Reason: "various reasons", Kind: k.Kind, Name: "-"}
		w, ok = a.pending[k]
		if !ok {
			w = &window{start: now}
			a.pending[k] = w
		}
		ok = true
	}
	if ok && now.Sub(w.start) < a.interval() {
		if w.repeats == 0 {
			w.firstRepeat = now
		}
		w.repeats++
		w.last = now
		a.mu.Unlock()
		return
	}
	var due []Record
	if ok {
		// Its interval ended and no flush ran yet: write the repeats first.
		if r, has := w.record(k); has {
			due = append(due, r)
		}
	}
	a.pending[k] = &window{start: now, last: now}
	a.mu.Unlock()
	due = append(due, Record{Key: k, Count: 1, First: now, Last: now})
	a.write(ctx, due)
}

func (w *window) record(k Key) (Record, bool) {
	if w.repeats == 0 {
		return Record{}, false
	}
	return Record{Key: k, Count: w.repeats, First: w.firstRepeat, Last: w.last, Repeat: true}, true
}

// Sweep writes the repeats of every key whose interval ended and forgets those keys;
// all true writes and forgets every key (shutdown).
func (a *Aggregator) Sweep(ctx context.Context, all bool) {
	now := a.now()
	var due []Record
	a.mu.Lock()
	for k, w := range a.pending {
		if all || now.Sub(w.start) >= a.interval() {
			if r, ok := w.record(k); ok {
				due = append(due, r)
			}
			delete(a.pending, k)
		}
	}
	a.mu.Unlock()
	a.write(ctx, due)
}

// Pending is how many keys are tracked.
func (a *Aggregator) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

// Run sweeps every interval until ctx ends, then writes what is pending (with a
// context of its own: ctx is done by then) and returns.
func (a *Aggregator) Run(ctx context.Context) {
	t := time.NewTicker(a.interval() / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			a.Sweep(fctx, true)
			cancel()
			return
		case <-t.C:
			a.Sweep(ctx, false)
		}
	}
}

func (a *Aggregator) write(ctx context.Context, rs []Record) {
	for _, r := range rs {
		if err := a.Write(ctx, r); err != nil && a.OnError != nil {
			a.OnError(r, err)
		}
	}
}
