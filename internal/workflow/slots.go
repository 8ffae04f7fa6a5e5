package workflow

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/verity"
)

// A/B slots. A workflow with an image2slot action writes the slot the machine is
// not running (Kiln's record of it: status.slot; slot a on a machine that has
// none) and makes it the next boot. When the workflow succeeds, the machine's
// status.slotUpgrade says which slot and version should come up. The installed
// system says which slot it booted when it phones home (kiln.slot= and
// kiln.version= from its kernel command line, which the boot entry carries), and
// SlotBooted compares: the slot expected is an upgrade, another one a rollback
// (systemd-boot ran out of tries on the new entry and booted the old one). A
// machine that does not phone home before the upgrade's deadline is recorded as
// not having come up (SweepSlotDeadlines).

// DefaultSlotDeadline is how long Kiln waits for an upgraded slot to phone home
// when the image2slot action sets no bootDeadline: three boots of a server with
// slow firmware.
const DefaultSlotDeadline = 15 * time.Minute

// ErrNoSlotAction: an upgrade's template has no image2slot action.
var ErrNoSlotAction = errors.New("no image2slot action")

// Upgrade starts a workflow that writes image to the machine's inactive slot and
// reboots into it: the image2slot actions of the template (the machine's
// profile's, or templateName) with args.image set to image, and its reboot,
// poweroff and kexec actions. What only an install does (partitioning,
// formatting the ESP, installing the boot loader) is left out.
func (e *Engine) Upgrade(ctx context.Context, actor, machine, image, templateName string) (*resource.Object, error) {
	if err := resource.ValidateName(image); err != nil {
		return nil, fmt.Errorf("image: %q is not an artifact name", image)
	}
	return e.start(ctx, actor, machine, templateName, func(tx store.Tx, ts *resource.TemplateSpec) (*resource.TemplateSpec, error) {
		art, err := tx.Get(ctx, "Artifact", image)
		if err != nil {
			return nil, fmt.Errorf("image: artifact %q: %w", image, err)
		}
		as, err := resource.Typed[resource.ArtifactSpec](art)
		if err != nil {
			return nil, err
		}
		if as.Verity == nil {
			return nil, fmt.Errorf("image: artifact %q has no spec.verity (hashTree, rootHash, rootHashSignature): only a dm-verity image can go to a slot", image)
		}
		out := &resource.TemplateSpec{Timeout: ts.Timeout}
		for _, a := range ts.Actions {
			switch a.Type {
			case "image2slot":
				if err := checkSignature(a, image, as.Verity); err != nil {
					return nil, err
				}
				args := make(map[string]any, len(a.Args)+1)
				for k, v := range a.Args {
					args[k] = v
				}
				args["image"] = image
				a.Args = args
			case "reboot", "poweroff", "kexec":
			default:
				continue
			}
			out.Actions = append(out.Actions, a)
		}
		if !slices.ContainsFunc(out.Actions, func(a resource.Action) bool { return a.Type == "image2slot" }) {
			return nil, fmt.Errorf("%w in the template: upgrade writes a slot with the template's image2slot action", ErrNoSlotAction)
		}
		return out, nil
	}, "upgrade")
}

// checkSignature refuses, before anything boots, an image whose root hash is not
// signed by a key the action trusts (the agent checks again before it writes:
// the Artifact may change before the machine runs the workflow).
func checkSignature(a resource.Action, image string, v *resource.ArtifactVerity) error {
	pemText, _ := a.Args["trustedCerts"].(string)
	if pemText == "" || strings.Contains(pemText, "{{") {
		return nil // rendered per machine: the agent checks it
	}
	certs, err := agentwire.ParseCertificatesPEM([]byte(pemText))
	if err != nil {
		return fmt.Errorf("action %q: args.trustedCerts: %w", a.Name, err)
	}
	root, err := verity.ParseRootHash(v.RootHash)
	if err != nil {
		return fmt.Errorf("image %q: spec.verity.rootHash: %w", image, err)
	}
	sig, err := base64.StdEncoding.DecodeString(v.RootHashSignature)
	if err != nil {
		return fmt.Errorf("image %q: spec.verity.rootHashSignature: not base64: %w", image, err)
	}
	if _, err := verity.VerifyRootHash(root, sig, certs); err != nil {
		return fmt.Errorf("image %q: spec.verity.rootHashSignature is not trusted by action %q's trustedCerts: %w", image, a.Name, err)
	}
	return nil
}

// nextSlot is the slot a workflow writes: the one the machine is not running.
func nextSlot(ms *resource.MachineStatus) string {
	if ms.Slot == "" {
		return agentwire.Slots[0]
	}
	return agentwire.OtherSlot(ms.Slot)
}

// renderSlotArgs fills an image2slot action's arguments from its image's
// Artifact (the hash tree's URL and sha256, the root hash and its signature, the
// version) and the slot, unless the template set them.
func renderSlotArgs(am map[string]any, data RenderData) {
	setDefault := func(k string, v any) {
		if _, set := am[k]; !set && v != "" {
			am[k] = v
		}
	}
	setDefault("slot", data.Slot)
	name, _ := am["image"].(string)
	art, ok := data.Artifacts[name]
	if !ok || art.Verity == nil {
		return
	}
	setDefault("version", name)
	setDefault("rootHash", art.Verity.RootHash)
	setDefault("rootHashSignature", art.Verity.RootHashSignature)
	if tree, ok := data.Artifacts[art.Verity.HashTree]; ok {
		setDefault("verityURL", tree.URL)
		setDefault("veritySHA256", tree.SHA256)
	}
}

// recordSlotUpgrade notes, when a workflow that wrote a slot succeeds, which slot
// and version the machine should come up in, and until when.
func (e *Engine) recordSlotUpgrade(ctx context.Context, tx store.Tx, m *resource.Object, wfName string, st *Status) error {
	var written *ActionStatus
	for i := range st.Actions {
		if st.Actions[i].Type == "image2slot" && st.Actions[i].State == Succeeded {
			written = &st.Actions[i]
		}
	}
	if written == nil {
		return nil
	}
	args := agentwire.Args(written.Args)
	slot, _ := args.String("slot")
	version, _ := args.String("version")
	deadline, err := args.Duration("bootDeadline", DefaultSlotDeadline)
	if err != nil {
		deadline = DefaultSlotDeadline
	}
	now := e.now()
	until := now.Add(deadline)
	return updateMachineStatus(ctx, tx, m, func(ms *resource.MachineStatus) {
		ms.SlotUpgrade = &resource.SlotUpgrade{Slot: slot, Version: version, Workflow: wfName, Since: now, Deadline: &until}
	})
}

// slotReport finds kiln.slot= and kiln.version= (or slot= and version=) in a
// phone-home message.
var (
	slotReport    = regexp.MustCompile(`(?:^|[\s+&])(?:kiln\.)?slot=([ab])(?:$|[\s+&])`)
	versionReport = regexp.MustCompile(`(?:^|[\s+&])(?:kiln\.)?version=([A-Za-z0-9._+~-]{1,64})(?:$|[\s&])`)
)

// ParseSlotReport reads the slot and version an installed system reports in its
// phone-home message; ok is false when it names no slot.
func ParseSlotReport(msg string) (slot, version string, ok bool) {
	m := slotReport.FindStringSubmatch(msg)
	if m == nil {
		return "", "", false
	}
	if v := versionReport.FindStringSubmatch(msg); v != nil {
		version = v[1]
	}
	return m[1], version, true
}

// SlotBooted records that a machine came up in slot running version: an upgrade
// when it is the slot its last slot workflow wrote, a rollback when it is not.
// The phone-home that reports it is unauthenticated (as every first-stage boot
// request): what it can change is this record, never the machine's state, a
// workflow, or what the machine may receive.
func (e *Engine) SlotBooted(ctx context.Context, machine, slot, version string) error {
	if !slices.Contains(agentwire.Slots, slot) {
		return fmt.Errorf("slot %q is not a or b", slot)
	}
	return e.Store.Update(ctx, func(tx store.Tx) error {
		m, err := tx.Get(ctx, "Machine", machine)
		if err != nil {
			return err
		}
		ms, err := machineStatus(m)
		if err != nil {
			return err
		}
		now := e.now()
		up := ms.SlotUpgrade
		var typ, msg string
		switch {
		case up != nil && up.Slot == slot:
			typ = "SlotBooted"
			msg = fmt.Sprintf("booted slot %s (%s) as upgraded by workflow %s", slot, version, up.Workflow)
			if ms.Slot != "" && ms.Slot != slot {
				msg += fmt.Sprintf("; previous slot %s (%s)", ms.Slot, ms.SlotVersion)
			}
		case up != nil:
			typ = "SlotRollback"
			msg = fmt.Sprintf("upgrade to slot %s (%s, workflow %s) did not come up: the machine fell back to slot %s (%s); rollback %d",
				up.Slot, up.Version, up.Workflow, slot, version, ms.Rollbacks+1)
		case ms.Slot == slot && ms.SlotVersion == version:
			return nil // an ordinary boot of the slot Kiln knows
		default:
			typ = "SlotBooted"
			msg = fmt.Sprintf("booted slot %s (%s); Kiln had slot %q (%s) and no upgrade pending", slot, version, ms.Slot, ms.SlotVersion)
		}
		err = updateMachineStatus(ctx, tx, m, func(ms *resource.MachineStatus) {
			if typ == "SlotRollback" {
				ms.Rollbacks++
			}
			if ms.Slot != slot && ms.Slot != "" {
				ms.PreviousSlot = ms.Slot
			}
			ms.Slot, ms.SlotVersion, ms.SlotUpgrade = slot, version, nil
		})
		if err != nil {
			return err
		}
		if typ == "SlotRollback" {
			if err := tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "workflow", Action: "slot-rollback", Kind: "Machine", Name: machine,
				Summary: fmt.Sprintf("slot %s (%s) did not come up; running slot %s (%s)", up.Slot, up.Version, slot, version)}); err != nil {
				return err
			}
		}
		return tx.AddEvent(ctx, &store.Event{Machine: machine, Time: now, Type: typ, Message: msg})
	})
}

// SweepSlotDeadlines records, for each machine whose upgraded slot has not
// phoned home by its deadline, that it did not come up (event SlotDeadline), and
// returns those machines (the server power-cycles the ones with a BMC). The
// upgrade stays pending, so the phone-home of whichever slot boots, later,
// settles it as an upgrade or a rollback.
func (e *Engine) SweepSlotDeadlines(ctx context.Context) ([]string, error) {
	var late []string
	err := e.Store.Update(ctx, func(tx store.Tx) error {
		ms, _, err := tx.List(ctx, "Machine", store.ListOptions{})
		if err != nil {
			return err
		}
		now := e.now()
		for _, m := range ms {
			st, err := machineStatus(m)
			if err != nil || st.SlotUpgrade == nil || st.SlotUpgrade.Deadline == nil || now.Before(*st.SlotUpgrade.Deadline) {
				continue
			}
			up := *st.SlotUpgrade
			if err := updateMachineStatus(ctx, tx, m, func(ms *resource.MachineStatus) { ms.SlotUpgrade.Deadline = nil }); err != nil {
				return err
			}
			late = append(late, m.Metadata.Name)
			if err := tx.AddEvent(ctx, &store.Event{Machine: m.Metadata.Name, Time: now, Type: "SlotDeadline",
				Message: fmt.Sprintf("slot %s (%s) did not phone home within %s of workflow %s: Kiln power-cycles it if it has a BMC; systemd-boot falls back to the other slot once its tries are used",
					up.Slot, up.Version, up.Deadline.Sub(up.Since).Round(time.Second), up.Workflow)}); err != nil {
				return err
			}
		}
		return nil
	})
	return late, err
}

func machineStatus(m *resource.Object) (*resource.MachineStatus, error) {
	var ms resource.MachineStatus
	if len(m.Status) > 0 {
		if err := json.Unmarshal(m.Status, &ms); err != nil {
			return nil, fmt.Errorf("machine %q: status: %w", m.Metadata.Name, err)
		}
	}
	return &ms, nil
}

// updateMachineStatus changes the slot fields of a machine's status and keeps
// every other field as stored (the status is shared with enrollment and facts).
func updateMachineStatus(ctx context.Context, tx store.Tx, m *resource.Object, change func(*resource.MachineStatus)) error {
	ms, err := machineStatus(m)
	if err != nil {
		return err
	}
	change(ms)
	var raw map[string]any
	if len(m.Status) > 0 {
		_ = json.Unmarshal(m.Status, &raw)
	}
	if raw == nil {
		raw = map[string]any{}
	}
	fields := map[string]any{"slot": ms.Slot, "slotVersion": ms.SlotVersion, "previousSlot": ms.PreviousSlot, "rollbacks": ms.Rollbacks, "slotUpgrade": ms.SlotUpgrade}
	for k, v := range fields {
		switch x := v.(type) {
		case string:
			if x == "" {
				delete(raw, k)
				continue
			}
		case int:
			if x == 0 {
				delete(raw, k)
				continue
			}
		case *resource.SlotUpgrade:
			if x == nil {
				delete(raw, k)
				continue
			}
		}
		raw[k] = v
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	m.Status = b
	return tx.Update(ctx, m)
}
