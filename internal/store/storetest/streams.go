package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// testChangeLog: every committed write of an object (create, batch create,
// update, delete) is in the change log, in commit order, with the object as
// written (as it was, for a delete); a rolled-back write is not; a kind filters.
func testChangeLog(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	st := open(t)
	m := NewMachine("web-1", map[string]string{"rack": "a"}, "52:54:00:00:00:01")
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, m) })
	update(t, st, func(tx store.Tx) error {
		_, err := tx.CreateBatch(ctx, []*resource.Object{profile("p1"), profile("p2")})
		return err
	})
	m.Metadata.Labels["rack"] = "b"
	update(t, st, func(tx store.Tx) error { return tx.Update(ctx, m) })
	// Leases are not logged (DHCP rewrites them at every packet).
	lease := &resource.Object{APIVersion: resource.APIVersion, Kind: store.UnloggedKind, Metadata: resource.Metadata{Name: "10.0.0.9"},
		Spec: json.RawMessage(`{"ip":"10.0.0.9","subnet":"s","state":"bound"}`)}
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, lease) })
	update(t, st, func(tx store.Tx) error { return tx.Update(ctx, lease) })
	update(t, st, func(tx store.Tx) error { return tx.Delete(ctx, store.UnloggedKind, "10.0.0.9", "") })
	// A failed transaction leaves no trace in the log.
	boom := fmt.Errorf("boom")
	if err := st.Update(ctx, func(tx store.Tx) error {
		if err := tx.Create(ctx, profile("never")); err != nil {
			return err
		}
		return boom
	}); err != boom {
		t.Fatalf("rolled-back update: %v", err)
	}
	update(t, st, func(tx store.Tx) error { return tx.Delete(ctx, "Machine", "web-1", "") })

	var all, machines []store.Change
	view(t, st, func(tx store.Tx) error {
		var err error
		if all, err = tx.ChangesAfter(ctx, "", 0, 100); err != nil {
			return err
		}
		machines, err = tx.ChangesAfter(ctx, "Machine", 0, 100)
		return err
	})
	var got []string
	for i, c := range all {
		got = append(got, c.Type+" "+c.Object.Kind+"/"+c.Object.Metadata.Name+" rv="+c.Object.Metadata.ResourceVersion+" rack="+c.Object.Metadata.Labels["rack"])
		if i > 0 && c.Seq <= all[i-1].Seq {
			t.Errorf("change %d has seq %d after %d: not increasing", i, c.Seq, all[i-1].Seq)
		}
	}
	want := []string{
		"ADDED Machine/web-1 rv=1 rack=a",
		"ADDED Profile/p1 rv=1 rack=",
		"ADDED Profile/p2 rv=1 rack=",
		"MODIFIED Machine/web-1 rv=2 rack=b",
		"DELETED Machine/web-1 rv=2 rack=b",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("change log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(machines) != 3 || machines[2].Type != store.ChangeDeleted || len(machines[2].Object.Spec) == 0 {
		t.Errorf("kind Machine: %d changes (want 3, the last a delete carrying the spec)", len(machines))
	}
	// Paging: strictly after, up to limit.
	view(t, st, func(tx store.Tx) error {
		page, err := tx.ChangesAfter(ctx, "", all[1].Seq, 2)
		if err != nil {
			return err
		}
		if len(page) != 2 || page[0].Seq != all[2].Seq || page[1].Seq != all[3].Seq {
			t.Errorf("changes after %d, limit 2: %v; want seqs %d, %d", all[1].Seq, page, all[2].Seq, all[3].Seq)
		}
		marks, err := tx.StreamMarks(ctx)
		if err != nil {
			return err
		}
		if marks.ChangeHead != all[4].Seq || marks.ChangeFloor != 0 {
			t.Errorf("marks %+v; want change head %d, floor 0", marks, all[4].Seq)
		}
		return nil
	})
	// Retention keeps the newest 2 and raises the floor to the newest removed.
	ret := st.(store.Retainer)
	n, err := ret.PruneChanges(ctx, 2)
	if err != nil || n != 3 {
		t.Fatalf("PruneChanges(2) = %d, %v; want 3 removed", n, err)
	}
	view(t, st, func(tx store.Tx) error {
		left, err := tx.ChangesAfter(ctx, "", 0, 100)
		if err != nil {
			return err
		}
		marks, err := tx.StreamMarks(ctx)
		if err != nil {
			return err
		}
		if len(left) != 2 || left[0].Seq != all[3].Seq {
			t.Errorf("after retention %d changes are left, first %v; want 2 from seq %d", len(left), left, all[3].Seq)
		}
		if marks.ChangeFloor != all[2].Seq || marks.ChangeHead != all[4].Seq {
			t.Errorf("marks after retention %+v; want floor %d head %d", marks, all[2].Seq, all[4].Seq)
		}
		return nil
	})
}

// testEventLog: events of every machine in id order, strictly after a cursor, one
// machine's alone; retention raises the floor to the newest id it removed, and the
// head stays when every event is gone.
func testEventLog(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	st := open(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ids []int64
	update(t, st, func(tx store.Tx) error {
		for i := range 6 {
			e := &store.Event{Machine: []string{"a", "b"}[i%2], Time: t0.Add(time.Duration(i) * time.Hour), Type: "dhcp", Message: fmt.Sprint(i)}
			if err := tx.AddEvent(ctx, e); err != nil {
				return err
			}
			ids = append(ids, e.ID)
		}
		return nil
	})
	msgs := func(evs []store.Event) string {
		var out []string
		for _, e := range evs {
			out = append(out, e.Machine+e.Message)
		}
		return strings.Join(out, ",")
	}
	view(t, st, func(tx store.Tx) error {
		evs, err := tx.EventsAfter(ctx, "", ids[1], 3)
		if err != nil {
			return err
		}
		if got := msgs(evs); got != "a2,b3,a4" {
			t.Errorf("events after the second, limit 3: %s; want a2,b3,a4", got)
		}
		if evs, err = tx.EventsAfter(ctx, "b", 0, 100); err != nil {
			return err
		}
		if got := msgs(evs); got != "b1,b3,b5" {
			t.Errorf("machine b's events: %s; want b1,b3,b5", got)
		}
		marks, err := tx.StreamMarks(ctx)
		if marks.EventHead != ids[5] || marks.EventFloor != 0 {
			t.Errorf("marks %+v; want event head %d, floor 0", marks, ids[5])
		}
		return err
	})
	ret := st.(store.Retainer)
	if _, err := ret.PruneEvents(ctx, t0.Add(3*time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	view(t, st, func(tx store.Tx) error {
		marks, err := tx.StreamMarks(ctx)
		if marks.EventFloor != ids[2] {
			t.Errorf("floor after removing the first three: %d; want %d", marks.EventFloor, ids[2])
		}
		return err
	})
	if _, err := ret.PruneEvents(ctx, t0.Add(24*time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	view(t, st, func(tx store.Tx) error {
		marks, err := tx.StreamMarks(ctx)
		if marks.EventFloor != ids[5] || marks.EventHead != ids[5] {
			t.Errorf("marks with every event removed: %+v; want head and floor %d", marks, ids[5])
		}
		return err
	})
	// A new event continues after the removed ones (ids are never reused).
	e := &store.Event{Machine: "a", Type: "dhcp", Message: "6"}
	update(t, st, func(tx store.Tx) error { return tx.AddEvent(ctx, e) })
	if e.ID <= ids[5] {
		t.Errorf("a new event after retention has id %d, not above %d", e.ID, ids[5])
	}
}

// testCommitNotifier: a commit that adds an event or writes an object closes the
// channel Committed returned before it; one that does neither does not.
func testCommitNotifier(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	st := open(t)
	cn, ok := st.(store.CommitNotifier)
	if !ok {
		t.Fatal("the store does not implement store.CommitNotifier")
	}
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	c := cn.Committed()
	update(t, st, func(tx store.Tx) error { _, _, err := tx.AuditHead(ctx); return err })
	if closed(c) {
		t.Error("a transaction that wrote no event and no object signalled")
	}
	update(t, st, func(tx store.Tx) error { return tx.AddEvent(ctx, &store.Event{Machine: "a", Type: "t"}) })
	if !closed(c) {
		t.Error("adding an event did not signal")
	}
	c = cn.Committed()
	update(t, st, func(tx store.Tx) error { return tx.Create(ctx, profile("p")) })
	if !closed(c) {
		t.Error("creating an object did not signal")
	}
}

// testWebhookState: a webhook's cursor is held by one owner while its lease runs;
// another owner can neither claim nor advance it then, and takes it over (at the
// cursor) once the lease expired; dead letters are listed newest first.
func testWebhookState(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	ws, ok := open(t).(store.WebhookState)
	if !ok {
		t.Fatal("the store does not implement store.WebhookState")
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lease := 30 * time.Second
	cur, ok, err := ws.ClaimWebhook(ctx, "h", "a", 5, t0, t0.Add(lease))
	if err != nil || !ok || cur != 5 {
		t.Fatalf("first claim: %d %v %v; want 5, held", cur, ok, err)
	}
	if _, ok, err := ws.ClaimWebhook(ctx, "h", "b", 0, t0.Add(time.Second), t0.Add(lease)); err != nil || ok {
		t.Fatalf("claim by b during a's lease: %v %v; want refused", ok, err)
	}
	if ok, err := ws.AdvanceWebhook(ctx, "h", "b", 9, t0.Add(lease), nil); err != nil || ok {
		t.Fatalf("advance by b: %v %v; want refused", ok, err)
	}
	d := &store.WebhookDelivery{EventID: 7, Type: "dhcp", State: "failed", Attempts: 3, LastStatus: 500, LastError: "HTTP 500"}
	if ok, err := ws.AdvanceWebhook(ctx, "h", "a", 7, t0.Add(2*lease), d); err != nil || !ok || d.ID == 0 {
		t.Fatalf("advance by a: %v %v (delivery id %d)", ok, err, d.ID)
	}
	if ok, err := ws.AdvanceWebhook(ctx, "h", "a", 8, t0.Add(2*lease), &store.WebhookDelivery{EventID: 8, State: "failed"}); err != nil || !ok {
		t.Fatalf("advance by a: %v %v", ok, err)
	}
	got, err := ws.WebhookDeliveries(ctx, "h", 10)
	if err != nil || len(got) != 2 || got[0].EventID != 8 || got[1].EventID != 7 || got[1].LastStatus != 500 || got[1].Attempts != 3 {
		t.Fatalf("deliveries: %+v %v; want events 8 then 7", got, err)
	}
	cur, ok, err = ws.ClaimWebhook(ctx, "h", "b", 0, t0.Add(3*lease), t0.Add(4*lease))
	if err != nil || !ok || cur != 8 {
		t.Fatalf("claim by b after a's lease: %d %v %v; want 8, held", cur, ok, err)
	}
	if err := ws.ForgetWebhook(ctx, "h"); err != nil {
		t.Fatal(err)
	}
	if cur, ok, err = ws.ClaimWebhook(ctx, "h", "a", 42, t0, t0.Add(lease)); err != nil || !ok || cur != 42 {
		t.Fatalf("claim after forget: %d %v %v; want a fresh start at 42", cur, ok, err)
	}
	if got, _ := ws.WebhookDeliveries(ctx, "h", 10); len(got) != 0 {
		t.Errorf("deliveries after forget: %d", len(got))
	}
}
