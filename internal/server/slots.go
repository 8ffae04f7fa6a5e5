package server

import (
	"context"
	"log/slog"

	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/workflow"
)

// The boot server's UKI agent watch reads timelines and enrollment requests
// through its inventory (boot.Server.watchAgent); without these methods it
// silently watches nothing.
var _ interface {
	boot.Inventory
	Events(ctx context.Context, machine string, limit int) ([]store.Event, error)
	List(ctx context.Context, kind string, opts store.ListOptions) ([]*resource.Object, string, error)
} = phoneHomeSlots{}

// phoneHomeSlots is the boot server's inventory with one addition: a phone-home
// whose message names an A/B slot (kiln.slot=b kiln.version=v2, from the installed
// system's kernel command line) also records the slot the machine came up in, an
// upgrade or a rollback (workflow.Engine.SlotBooted). The boot server only records
// the event; what it means for slots is the workflow engine's.
type phoneHomeSlots struct {
	// The whole inventory service, not the boot.Inventory interface: the boot
	// server also asks it for timelines and enrollment requests (its UKI agent
	// watch), by type assertion, which an embedded interface would hide.
	*inventory.Service
	engine *workflow.Engine
	log    *slog.Logger
}

func (p phoneHomeSlots) AddEvent(ctx context.Context, e store.Event) error {
	if err := p.Service.AddEvent(ctx, e); err != nil {
		return err
	}
	if e.Type != "PhoneHome" {
		return nil
	}
	slot, version, ok := workflow.ParseSlotReport(e.Message)
	if !ok {
		return nil
	}
	if err := p.engine.SlotBooted(ctx, e.Machine, slot, version); err != nil {
		p.log.Warn("record the slot a machine booted", "machine", e.Machine, "slot", slot, "err", err)
	}
	return nil
}
