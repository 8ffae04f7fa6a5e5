package auditagg_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/auditagg"
	"github.com/kilnhq/kiln/internal/testclock"
)

type recorder struct{ got []auditagg.Record }

func (r *recorder) write(_ context.Context, rec auditagg.Record) error {
	r.got = append(r.got, rec)
	return nil
}

func (r *recorder) take() []string {
	var out []string
	for _, g := range r.got {
		out = append(out, fmt.Sprintf("%s %s %s x%d repeat=%v", g.Action, g.Source, g.Reason, g.Count, g.Repeat))
	}
	r.got = nil
	return out
}

func TestFirstAtOnceRepeatsCounted(t *testing.T) {
	ctx := context.Background()
	clock := testclock.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	rec := &recorder{}
	a := &auditagg.Aggregator{Write: rec.write, Now: clock.Now}
	bad := auditagg.Key{Action: "enroll-refused", Source: "10.0.0.5", Reason: "bad token"}
	other := auditagg.Key{Action: "enroll-refused", Source: "10.0.0.6", Reason: "bad token"}
	a.Note(ctx, bad)
	if got := rec.take(); fmt.Sprint(got) != "[enroll-refused 10.0.0.5 bad token x1 repeat=false]" {
		t.Fatalf("first refusal: %v", got)
	}
	for range 1233 {
		clock.Advance(10 * time.Millisecond)
		a.Note(ctx, bad)
	}
	a.Note(ctx, other)
	if got := rec.take(); fmt.Sprint(got) != "[enroll-refused 10.0.0.6 bad token x1 repeat=false]" {
		t.Fatalf("repeats written before the interval ended: %v", got)
	}
	a.Sweep(ctx, false)
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("sweep before the interval ended wrote %v", got)
	}
	clock.Advance(time.Minute)
	a.Sweep(ctx, false)
	if got := rec.take(); fmt.Sprint(got) != "[enroll-refused 10.0.0.5 bad token x1233 repeat=true]" {
		t.Fatalf("sweep after the interval: %v", got)
	}
	if a.Pending() != 0 {
		t.Fatalf("%d keys pending after a sweep of ended intervals", a.Pending())
	}
	// A new interval starts with a refusal written at once again.
	a.Note(ctx, bad)
	a.Note(ctx, bad)
	a.Note(ctx, bad)
	if got := rec.take(); len(got) != 1 {
		t.Fatalf("new interval: %v", got)
	}
	// Shutdown writes what is pending.
	a.Sweep(ctx, true)
	if got := rec.take(); fmt.Sprint(got) != "[enroll-refused 10.0.0.5 bad token x2 repeat=true]" {
		t.Fatalf("flush at shutdown: %v", got)
	}
}

// TestIntervalEndedBeforeSweep: a refusal after its key's interval ended, before
// any sweep, writes the counted repeats and then itself.
func TestIntervalEndedBeforeSweep(t *testing.T) {
	ctx := context.Background()
	clock := testclock.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	rec := &recorder{}
	a := &auditagg.Aggregator{Write: rec.write, Now: clock.Now, Interval: time.Second}
	k := auditagg.Key{Action: "a", Source: "s", Reason: "r"}
	a.Note(ctx, k)
	a.Note(ctx, k)
	clock.Advance(time.Second)
	rec.take()
	a.Note(ctx, k)
	if got := rec.take(); fmt.Sprint(got) != "[a s r x1 repeat=true a s r x1 repeat=false]" {
		t.Fatalf("got %v", got)
	}
}

// TestManySourcesBounded: refusals from more distinct sources than MaxKeys are
// counted together, not written one by one, and memory stays at the cap.
func TestManySourcesBounded(t *testing.T) {
	ctx := context.Background()
	clock := testclock.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	rec := &recorder{}
	a := &auditagg.Aggregator{Write: rec.write, Now: clock.Now, MaxKeys: 100}
	for i := range 10000 {
		a.Note(ctx, auditagg.Key{Action: "enroll-refused", Source: fmt.Sprintf("10.1.%d.%d", i/256, i%256), Reason: "bad token"})
	}
	if n := len(rec.take()); n != 100 {
		t.Fatalf("%d entries written at once; want one per tracked source, 100", n)
	}
	if p := a.Pending(); p > 101 {
		t.Fatalf("%d keys pending; want at most the cap and one overflow key", p)
	}
	a.Sweep(ctx, true)
	got := rec.take()
	if fmt.Sprint(got) != "[enroll-refused "+auditagg.OverflowSource+" various reasons x9900 repeat=true]" {
		t.Fatalf("flush: %v", got)
	}
}

// TestRunFlushesOnStop: Run writes what is pending when its context ends, before it
// returns.
func TestRunFlushesOnStop(t *testing.T) {
	clock := testclock.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	rec := &recorder{}
	a := &auditagg.Aggregator{Write: rec.write, Now: clock.Now, Interval: time.Hour}
	k := auditagg.Key{Action: "a", Source: "s", Reason: "r"}
	for range 5 {
		a.Note(context.Background(), k)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a.Run(ctx)
	if got := rec.take(); fmt.Sprint(got) != "[a s r x1 repeat=false a s r x4 repeat=true]" {
		t.Fatalf("got %v", got)
	}
}
