package watch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// ErrGone: the sequence a watch would resume from is older than what retention
// kept; the client must list again (HTTP 410).
var ErrGone = errors.New("resource version is older than the retained history: list again")

// Message is one message of a stream: an event of the timeline or a change of an
// object, with what filters look at.
type Message struct {
	ID   int64  // the sequence in its log
	Type string // the SSE event name: "event", or ADDED, MODIFIED, DELETED
	Data []byte // one line of JSON: the event, or the object as lists return it

	Machine   string            // the event's machine
	EventType string            // the event's type (dhcp, tftp ...)
	Kind      string            // the changed object's kind
	Name      string            // the changed object's name
	Labels    map[string]string // the changed object's labels
}

// Filter selects the messages a watcher receives; the zero Filter selects all.
type Filter struct {
	Machine  string            // events of this machine only
	Types    []string          // events of these types only
	Kind     string            // changes of this kind only
	Selector resource.Selector // changes of objects with matching labels only
	// Selected names the objects of Kind the client holds as matching Selector
	// when the watch starts (a list's, or the snapshot's). Under a Selector the
	// watch follows the selection from there: a write that takes an object out of
	// it arrives as DELETED, one that brings it in as ADDED, as Kubernetes does;
	// without that a client filtering by label keeps a stale object.
	Selected []string
	// Resumed says Selected was read now while the client's list is as of the
	// watch's start version: an object written between the two may have left or
	// entered the selection since, so the first of its writes the watch replays
	// decides (one that does not match is sent as DELETED: the client may hold it).
	Resumed bool
}

// Match reports whether m passes the filter.
func (f *Filter) Match(m *Message) bool {
	switch {
	case f.Machine != "" && m.Machine != f.Machine,
		len(f.Types) > 0 && !slices.Contains(f.Types, m.EventType),
		f.Kind != "" && m.Kind != f.Kind:
		return false
	}
	return f.Selector.Empty() || f.Selector.Matches(m.Labels)
}

// Log is one of the store's logs as a stream of messages.
type Log interface {
	// Read returns up to limit messages with ID > after, in order. f is a hint: a
	// Log may leave out messages f does not match (the caller filters again).
	Read(ctx context.Context, after int64, limit int, f *Filter) ([]Message, error)
	// Marks returns the newest sequence written and the newest removed by retention.
	Marks(ctx context.Context) (head, floor int64, err error)
}

// EventLog is the store's event log (the machines' timelines).
type EventLog struct{ Store store.Store }

// Read implements Log.
func (l EventLog) Read(ctx context.Context, after int64, limit int, f *Filter) ([]Message, error) {
	var evs []store.Event
	err := l.Store.View(ctx, func(tx store.Tx) error {
		var err error
		evs, err = tx.EventsAfter(ctx, f.Machine, after, limit)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Message, 0, len(evs))
	for i := range evs {
		e := &evs[i]
		data, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode event %d: %w", e.ID, err)
		}
		out = append(out, Message{ID: e.ID, Type: "event", Data: data, Machine: e.Machine, EventType: e.Type})
	}
	return out, nil
}

// Marks implements Log.
func (l EventLog) Marks(ctx context.Context) (head, floor int64, err error) {
	m, err := marks(ctx, l.Store)
	return m.EventHead, m.EventFloor, err
}

// ChangeLog is the store's change log (every committed write of an object).
type ChangeLog struct{ Store store.Store }

// Read implements Log.
func (l ChangeLog) Read(ctx context.Context, after int64, limit int, f *Filter) ([]Message, error) {
	var cs []store.Change
	err := l.Store.View(ctx, func(tx store.Tx) error {
		var err error
		cs, err = tx.ChangesAfter(ctx, f.Kind, after, limit)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Message, 0, len(cs))
	for i := range cs {
		c := &cs[i]
		data, err := json.Marshal(c.Object)
		if err != nil {
			return nil, fmt.Errorf("encode change %d of %s %q: %w", c.Seq, strings.ToLower(c.Object.Kind), c.Object.Metadata.Name, err)
		}
		out = append(out, Message{ID: c.Seq, Type: c.Type, Data: data, Kind: c.Object.Kind, Name: c.Object.Metadata.Name, Labels: c.Object.Metadata.Labels})
	}
	return out, nil
}

// Marks implements Log.
func (l ChangeLog) Marks(ctx context.Context) (head, floor int64, err error) {
	m, err := marks(ctx, l.Store)
	return m.ChangeHead, m.ChangeFloor, err
}

func marks(ctx context.Context, st store.Store) (store.StreamMarks, error) {
	var m store.StreamMarks
	err := st.View(ctx, func(tx store.Tx) error {
		var err error
		m, err = tx.StreamMarks(ctx)
		return err
	})
	return m, err
}
