package watch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// addEvents writes n events of machine m, one transaction each.
func addEvents(t *testing.T, st store.Store, m string, n int) {
	t.Helper()
	for i := range n {
		err := st.Update(context.Background(), func(tx store.Tx) error {
			return tx.AddEvent(context.Background(), &store.Event{Machine: m, Type: "dhcp", Message: fmt.Sprint(i)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func startBroker(t *testing.T, st store.Store, l Log, opts Options) *Broker {
	t.Helper()
	b := NewBroker(l, st.(store.CommitNotifier), opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

// next reads one message, failing after a while.
func next(t *testing.T, w *Watcher) *Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := w.Next(ctx, nil)
	if err != nil {
		t.Fatalf("next message after %d: %v", w.Last(), err)
	}
	return m
}

// TestResumeNoLossNoDuplicate: a watch from 0 gets the backlog then the live
// events; a second watch resuming from the last id the first got continues with
// exactly the ones after it, whether they were written before or after it joined.
func TestResumeNoLossNoDuplicate(t *testing.T) {
	st := testkit.OpenSQLite(t, filepath.Join(t.TempDir(), "data"))
	addEvents(t, st, "a", 5)
	b := startBroker(t, st, EventLog{Store: st}, Options{Poll: time.Hour}) // local commits only
	w, err := b.Watch(context.Background(), 0, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []int64
	for range 3 {
		seen = append(seen, next(t, w).ID)
	}
	w.Close() // the client goes after 3
	addEvents(t, st, "a", 5)
	w2, err := b.Watch(context.Background(), seen[len(seen)-1], Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	for range 7 {
		seen = append(seen, next(t, w2).ID)
	}
	addEvents(t, st, "a", 3) // live now
	for range 3 {
		seen = append(seen, next(t, w2).ID)
	}
	for i, id := range seen {
		if id != int64(i+1) {
			t.Fatalf("ids seen %v: want 1..13 each once, in order", seen)
		}
	}
}

// TestFilterMachineAndType: a watch of one machine and type gets only those,
// from the backlog and live alike.
func TestFilterMachineAndType(t *testing.T) {
	st := testkit.OpenSQLite(t, filepath.Join(t.TempDir(), "data"))
	add := func(m, typ string) {
		if err := st.Update(context.Background(), func(tx store.Tx) error {
			return tx.AddEvent(context.Background(), &store.Event{Machine: m, Type: typ})
		}); err != nil {
			t.Fatal(err)
		}
	}
	add("a", "dhcp")
	add("b", "dhcp")
	add("a", "tftp")
	b := startBroker(t, st, EventLog{Store: st}, Options{Poll: time.Hour})
	w, err := b.Watch(context.Background(), 0, Filter{Machine: "a", Types: []string{"tftp", "script"}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	add("b", "tftp")
	add("a", "dhcp")
	add("a", "script")
	if m := next(t, w); m.Machine != "a" || m.EventType != "tftp" || m.ID != 3 {
		t.Errorf("first: %+v; want machine a's tftp event 3", m)
	}
	if m := next(t, w); m.Machine != "a" || m.EventType != "script" || m.ID != 6 {
		t.Errorf("second: %+v; want machine a's script event 6", m)
	}
}

// TestSlowWatcherDropped: a watcher that does not read is dropped once it is
// the broker's buffer behind; writers never wait for it, and a watcher that keeps
// up gets everything.
func TestSlowWatcherDropped(t *testing.T) {
	st := testkit.OpenSQLite(t, filepath.Join(t.TempDir(), "data"))
	b := startBroker(t, st, EventLog{Store: st}, Options{Poll: 10 * time.Millisecond, Buffer: 4})
	slow, err := b.Watch(context.Background(), 0, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := b.Watch(context.Background(), 0, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	for i := range 3 {
		addEvents(t, st, "a", 1)
		if m := next(t, fast); m.ID != int64(i+1) {
			t.Fatalf("fast watcher got %d; want %d", m.ID, i+1)
		}
	}
	for i := 3; i < 23; i++ {
		addEvents(t, st, "a", 1) // returns: nobody waits for the slow one
		if m := next(t, fast); m.ID != int64(i+1) {
			t.Fatalf("fast watcher got %d; want %d", m.ID, i+1)
		}
	}
	// The slow one is told at once: what the ring still holds is not all it missed.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got int
	for {
		m, err := slow.Next(ctx, nil)
		if errors.Is(err, ErrDropped) {
			break
		}
		if err != nil {
			t.Fatalf("slow watcher: %v after %d messages; want ErrDropped", err, got)
		}
		got++
		if m.ID != int64(got) {
			t.Fatalf("slow watcher got %d as message %d", m.ID, got)
		}
	}
	if got != 0 {
		t.Errorf("slow watcher got %d messages before it was dropped; want none", got)
	}
	if n := b.Watchers(); n != 1 {
		t.Errorf("%d watchers attached; want 1 (the slow one is gone)", n)
	}
}

// TestGoneAfterRetention: resuming from before what retention removed is
// ErrGone; from the floor on, it works.
func TestGoneAfterRetention(t *testing.T) {
	st := testkit.OpenSQLite(t, filepath.Join(t.TempDir(), "data"))
	addEvents(t, st, "a", 5)
	if _, err := st.(store.Retainer).PruneEvents(context.Background(), time.Time{}, 2); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, st, EventLog{Store: st}, Options{Poll: time.Hour})
	if _, err := b.Watch(context.Background(), 2, Filter{}); !errors.Is(err, ErrGone) {
		t.Errorf("watch from 2 with events 1..3 removed: %v; want ErrGone", err)
	}
	w, err := b.Watch(context.Background(), 3, Filter{})
	if err != nil {
		t.Fatalf("watch from 3 (the floor): %v", err)
	}
	defer w.Close()
	if m := next(t, w); m.ID != 4 {
		t.Errorf("first after the floor: %d; want 4", m.ID)
	}
}

// TestChangesAcrossStores: a broker on one store (replica 2) sees, by polling,
// the object writes committed through another store on the same database
// (replica 1), with ADDED, MODIFIED and DELETED in order.
func TestChangesAcrossStores(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	st1 := testkit.OpenSQLite(t, dir)
	st2 := testkit.OpenSQLite(t, dir)
	b := startBroker(t, st2, ChangeLog{Store: st2}, Options{Poll: 20 * time.Millisecond})
	w, err := b.Watch(context.Background(), 0, Filter{Kind: "Profile"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	err = st1.Update(ctx, func(tx store.Tx) error {
		return tx.Create(ctx, profileObject("p1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = st1.Update(ctx, func(tx store.Tx) error {
		return tx.Delete(ctx, "Profile", "p1", "")
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ADDED", "DELETED"} {
		if m := next(t, w); m.Type != want || m.Kind != "Profile" {
			t.Errorf("got %s %s; want %s Profile", m.Type, m.Kind, want)
		}
	}
}

// manualNotify is a store.CommitNotifier the test fires.
type manualNotify struct{ c chan struct{} }

func (n *manualNotify) Committed() <-chan struct{} { return n.c }

// TestResumeAheadOfBroker: a client resuming on a replica whose broker has not
// yet read what the client saw elsewhere gets only what follows, once.
func TestResumeAheadOfBroker(t *testing.T) {
	st := testkit.OpenSQLite(t, filepath.Join(t.TempDir(), "data"))
	n := &manualNotify{c: make(chan struct{})}
	b := NewBroker(EventLog{Store: st}, n, Options{Poll: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-b.ready // the broker's cursor is 0
	addEvents(t, st, "a", 5)
	w, err := b.Watch(context.Background(), 3, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	close(n.c) // now the broker reads 1..5
	for _, want := range []int64{4, 5} {
		if m := next(t, w); m.ID != want {
			t.Fatalf("got %d; want %d (the client had 1..3)", m.ID, want)
		}
	}
}
