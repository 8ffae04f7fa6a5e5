package server

import (
	"context"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/power"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
)

// cycleRecorder is a BMC that records what it is asked.
type cycleRecorder struct{ ops chan string }

func (c cycleRecorder) PowerOn(context.Context) error    { c.ops <- "on"; return nil }
func (c cycleRecorder) PowerOff(context.Context) error   { c.ops <- "off"; return nil }
func (c cycleRecorder) PowerCycle(context.Context) error { c.ops <- "cycle"; return nil }
func (c cycleRecorder) SoftOff(context.Context) error    { c.ops <- "soft-off"; return nil }
func (c cycleRecorder) Status(context.Context) (power.State, error) {
	return power.StateOn, nil
}
func (c cycleRecorder) SetNextBoot(_ context.Context, d power.Device) error {
	c.ops <- "next-boot " + string(d)
	return nil
}
func (c cycleRecorder) Close(context.Context) error { return nil }

// TestCycleAfterSlotDeadline: a machine whose upgraded slot did not phone home in
// time is power-cycled through its BMC (no one-time PXE: the disk boots, and
// systemd-boot counts the try); a machine without a BMC is left alone.
func TestCycleAfterSlotDeadline(t *testing.T) {
	ctx := context.Background()
	env := testkit.NewStore(t, `
kind: Machine
metadata: {name: with-bmc}
spec: {bmc: {driver: qemu, address: /run/kiln-test/qmp.sock}}
---
kind: Machine
metadata: {name: no-bmc}
spec: {}
`)
	rec := cycleRecorder{ops: make(chan string, 4)}
	p := &powerService{st: env.Store, inv: &inventory.Service{Store: env.Store}, owner: "test"}
	p.runner = power.NewRunner(power.RunnerConfig{
		NewDriver: func(context.Context, string, resource.BMC) (power.Driver, error) { return rec, nil },
		Jobs:      p, Recorder: p, Attempts: 1, Timeout: time.Minute, Owner: p.owner,
	})
	if job, err := p.cycleAfterSlotDeadline(ctx, "no-bmc"); job != "" || err != nil {
		t.Errorf("no BMC: job %q, %v; want nothing", job, err)
	}
	job, err := p.cycleAfterSlotDeadline(ctx, "with-bmc")
	if err != nil || job == "" {
		t.Fatalf("with a BMC: job %q, %v", job, err)
	}
	select {
	case op := <-rec.ops:
		if op != "cycle" {
			t.Errorf("the BMC was asked %q, want a power cycle only", op)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the BMC was not asked to power-cycle")
	}
	select {
	case op := <-rec.ops:
		t.Errorf("then also %q", op)
	case <-time.After(200 * time.Millisecond):
	}
}
