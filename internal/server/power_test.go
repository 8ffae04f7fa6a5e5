package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/power"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// TestPowerJobSweep: at startup the jobs this server left unfinished are failed;
// another replica's are left alone unless one has been running longer than a
// job may; finished jobs are never touched. Each failure is audited and on the
// machine's timeline.
func TestPowerJobSweep(t *testing.T) {
	ctx := context.Background()
	st := testkit.OpenSQLite(t, t.TempDir())
	p := &powerService{st: st, inv: &inventory.Service{Store: st}, owner: "host-a:/var/lib/kiln"}
	p.runner = power.NewRunner(power.RunnerConfig{
		NewDriver: func(context.Context, string, resource.BMC) (power.Driver, error) { return nil, nil },
		Jobs:      p, Timeout: 10 * time.Minute, Owner: p.owner,
	})
	now := time.Now().UTC()
	jobs := []power.Job{
		{ID: "mine-running", Owner: p.owner, State: power.JobRunning, StartedAt: now.Add(-time.Minute)},
		{ID: "mine-pending", Owner: p.owner, State: power.JobPending},
		{ID: "mine-done", Owner: p.owner, State: power.JobSucceeded},
		{ID: "other-running", Owner: "host-b:/var/lib/kiln", State: power.JobRunning, StartedAt: now.Add(-time.Minute)},
		{ID: "other-pending", Owner: "host-b:/var/lib/kiln", State: power.JobPending},
		{ID: "other-overdue", Owner: "host-b:/var/lib/kiln", State: power.JobRunning, StartedAt: now.Add(-20 * time.Minute)},
	}
	for i := range jobs {
		j := &jobs[i]
		j.Machine, j.Op, j.CreatedAt, j.MaxAttempts = "m-"+j.ID, power.OpCycle, now.Add(-30*time.Minute), 3
		if err := p.SaveJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	state := func(id string) power.Job {
		t.Helper()
		var j power.Job
		err := st.View(ctx, func(tx store.Tx) error {
			o, err := tx.Get(ctx, "PowerJob", id)
			if err != nil {
				return err
			}
			return json.Unmarshal(o.Status, &j)
		})
		if err != nil {
			t.Fatal(err)
		}
		return j
	}

	// A periodic sweep: only the overdue job of the other replica.
	if n, err := p.sweepJobs(ctx, false, now); err != nil || n != 1 {
		t.Fatalf("periodic sweep: %d, %v; want 1", n, err)
	}
	if j := state("other-overdue"); j.State != power.JobFailed || !strings.Contains(j.Error, "the server running it stopped") || j.FinishedAt.IsZero() {
		t.Fatalf("overdue job: %+v", j)
	}
	if j := state("mine-running"); j.State != power.JobRunning {
		t.Fatalf("a periodic sweep touched this server's running job: %+v", j)
	}

	// Startup: this server's unfinished jobs too.
	if n, err := p.sweepJobs(ctx, true, now); err != nil || n != 2 {
		t.Fatalf("startup sweep: %d, %v; want 2", n, err)
	}
	want := map[string]power.JobState{
		"mine-running": power.JobFailed, "mine-pending": power.JobFailed, "mine-done": power.JobSucceeded,
		"other-running": power.JobRunning, "other-pending": power.JobPending, "other-overdue": power.JobFailed,
	}
	for id, s := range want {
		if j := state(id); j.State != s {
			t.Errorf("%s: %s, want %s (%s)", id, j.State, s, j.Error)
		}
	}
	if j := state("mine-pending"); !strings.Contains(j.Error, "kiln serve stopped before it finished") || !strings.Contains(j.Error, "was pending") {
		t.Errorf("error of an interrupted job: %q", j.Error)
	}
	// Audited and on the timeline.
	err := st.View(ctx, func(tx store.Tx) error {
		entries, err := tx.ListAuditFor(ctx, "Machine", "m-mine-running", 0, 0)
		if err != nil {
			return err
		}
		if len(entries) != 1 || entries[0].Action != "power-interrupted" {
			t.Errorf("audit of m-mine-running: %+v", entries)
		}
		evs, err := tx.ListEvents(ctx, "m-mine-running", 10)
		if err != nil {
			return err
		}
		if len(evs) != 1 || evs[0].Type != power.EventPowerFailed {
			t.Errorf("events of m-mine-running: %+v", evs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing left to do: a second sweep fails nothing.
	if n, err := p.sweepJobs(ctx, true, now); err != nil || n != 0 {
		t.Fatalf("second sweep: %d, %v", n, err)
	}
}
