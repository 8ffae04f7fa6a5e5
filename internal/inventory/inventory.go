// Package inventory is Kiln's service layer for inventory objects: apply, get, list,
// delete, with validation, reference checks, audit and machine events. The REST API
// (and through it the CLI) sits on this, never on the store directly.
package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Service applies and reads inventory objects.
type Service struct {
	Store store.Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Check, if set, validates an object beyond its own spec (a Template's actions
	// against what the agent can run); its error is reported as invalid input.
	Check func(o *resource.Object) error
}

func (s *Service) check(o *resource.Object) error {
	if s.Check == nil {
		return nil
	}
	if err := s.Check(o); err != nil {
		return &ValidationError{Err: &resource.ObjectError{Kind: o.Kind, Name: o.Metadata.Name, Err: err}}
	}
	return nil
}

// Actor is who makes a change: an API token's id, or "system".
type Actor struct {
	ID   string
	Role string
}

// Outcome of applying one object.
const (
	Created   = "created"
	Updated   = "configured"
	Unchanged = "unchanged"
)

// Result reports what apply did to one object.
type Result struct {
	Kind            string `json:"kind"`
	Name            string `json:"name"`
	Outcome         string `json:"outcome"`
	ResourceVersion string `json:"resourceVersion"`
	// Summary says what changed (as the audit entry does); empty when unchanged.
	Summary string `json:"summary,omitempty"`
}

// ValidationError is bad input: the API answers 422 (or 400) with its message.
type ValidationError struct{ Err error }

func (e *ValidationError) Error() string { return e.Err.Error() }
func (e *ValidationError) Unwrap() error { return e.Err }

func invalid(format string, a ...any) error {
	return &ValidationError{Err: fmt.Errorf(format, a...)}
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Apply creates or updates every object in one transaction: all of them or none.
// An object that carries a resourceVersion is only updated if it is still current.
func (s *Service) Apply(ctx context.Context, actor Actor, objs []*resource.Object) ([]Result, error) {
	return s.apply(ctx, actor, objs, false)
}

// errDryRun ends a dry run's transaction: everything was checked, nothing is kept.
var errDryRun = errors.New("dry run: roll back")

// ApplyDryRun checks and applies objs exactly as Apply does, in a transaction it
// then rolls back: the results say what Apply would do (validation, references,
// conflicts included); nothing is written, audited or evented.
func (s *Service) ApplyDryRun(ctx context.Context, actor Actor, objs []*resource.Object) ([]Result, error) {
	return s.apply(ctx, actor, objs, true)
}

func (s *Service) apply(ctx context.Context, actor Actor, objs []*resource.Object, dryRun bool) ([]Result, error) {
	if err := checkBatch(objs); err != nil {
		return nil, err
	}
	for _, o := range objs {
		if err := s.check(o); err != nil {
			return nil, err
		}
	}
	ordered := append([]*resource.Object(nil), objs...)
	resource.SortForApply(ordered)
	var results []Result
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		results = results[:0]
		for _, in := range ordered {
			r, err := s.applyOne(ctx, tx, actor, in)
			if err != nil {
				return err
			}
			results = append(results, r)
		}
		for _, in := range ordered {
			if err := checkReferences(ctx, tx, in); err != nil {
				return err
			}
		}
		if dryRun {
			return errDryRun
		}
		return nil
	})
	if err != nil && !(dryRun && errors.Is(err, errDryRun)) {
		return nil, err
	}
	return results, nil
}

// checkBatch refuses a batch that names one object twice.
func checkBatch(objs []*resource.Object) error {
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[o.Key()] {
			return invalid("%s: appears twice in one apply", (&resource.ObjectError{Kind: o.Kind, Name: o.Metadata.Name, Err: errors.New("duplicate document")}).Error())
		}
		seen[o.Key()] = true
	}
	return nil
}

func (s *Service) applyOne(ctx context.Context, tx store.Tx, actor Actor, in *resource.Object) (Result, error) {
	res := Result{Kind: in.Kind, Name: in.Metadata.Name}
	cur, err := tx.Get(ctx, in.Kind, in.Metadata.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		obj := newObject(in)
		if err := authorizeChange(ctx, tx, actor, obj, nil); err != nil {
			return res, err
		}
		if err := tx.Create(ctx, obj); err != nil {
			return res, objectErr(in, "create", err)
		}
		if err := s.record(ctx, tx, actor, "create", obj, nil); err != nil {
			return res, err
		}
		res.Outcome, res.ResourceVersion, res.Summary = Created, obj.Metadata.ResourceVersion, Summary("create", nil, obj)
		return res, nil
	case err != nil:
		return res, objectErr(in, "read", err)
	}
	if in, err = keepRevocation(cur, in); err != nil {
		return res, err
	}
	if sameContent(cur, in) {
		res.Outcome, res.ResourceVersion = Unchanged, cur.Metadata.ResourceVersion
		return res, nil
	}
	if in.Metadata.ResourceVersion != "" && in.Metadata.ResourceVersion != cur.Metadata.ResourceVersion {
		return res, objectErr(in, "update", fmt.Errorf("%w: applying resourceVersion %s but the stored one is %s (re-read it and apply again)",
			store.ErrConflict, in.Metadata.ResourceVersion, cur.Metadata.ResourceVersion))
	}
	next := cur.Clone()
	next.Metadata.Labels, next.Metadata.Annotations = in.Metadata.Labels, in.Metadata.Annotations
	next.Spec = in.Spec
	if err := authorizeChange(ctx, tx, actor, next, cur); err != nil {
		return res, err
	}
	if err := tx.Update(ctx, next); err != nil {
		return res, objectErr(in, "update", err)
	}
	if err := s.record(ctx, tx, actor, "update", next, cur); err != nil {
		return res, err
	}
	res.Outcome, res.ResourceVersion, res.Summary = Updated, next.Metadata.ResourceVersion, Summary("update", cur, next)
	return res, nil
}

// newObject is what is stored for a new object: the operator's part of in, and the
// initial status Kiln owns (a new machine is in state "new").
func newObject(in *resource.Object) *resource.Object {
	obj := in.Clone()
	obj.Status, obj.Metadata.ResourceVersion = nil, ""
	if obj.Kind == "Machine" {
		obj.Status = json.RawMessage(`{"state":"` + resource.StateNew + `"}`)
	}
	return obj
}

// Create stores a new object; ErrExists if the name is taken.
func (s *Service) Create(ctx context.Context, actor Actor, in *resource.Object) (*resource.Object, error) {
	if err := s.check(in); err != nil {
		return nil, err
	}
	obj := newObject(in)
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		if err := authorizeChange(ctx, tx, actor, obj, nil); err != nil {
			return err
		}
		if err := tx.Create(ctx, obj); err != nil {
			return objectErr(in, "create", err)
		}
		if err := checkReferences(ctx, tx, obj); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, "create", obj, nil)
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// Update replaces an object's labels and spec. With a resourceVersion it fails with
// ErrConflict unless that is the stored version.
func (s *Service) Update(ctx context.Context, actor Actor, in *resource.Object) (*resource.Object, error) {
	if err := s.check(in); err != nil {
		return nil, err
	}
	var out *resource.Object
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.Get(ctx, in.Kind, in.Metadata.Name)
		if err != nil {
			return objectErr(in, "update", err)
		}
		if in.Metadata.ResourceVersion != "" && in.Metadata.ResourceVersion != cur.Metadata.ResourceVersion {
			return objectErr(in, "update", fmt.Errorf("%w: resourceVersion %s is stale, the stored one is %s",
				store.ErrConflict, in.Metadata.ResourceVersion, cur.Metadata.ResourceVersion))
		}
		if in, err = keepRevocation(cur, in); err != nil {
			return err
		}
		if sameContent(cur, in) {
			out = cur
			return nil
		}
		next := cur.Clone()
		next.Metadata.Labels, next.Metadata.Annotations, next.Spec = in.Metadata.Labels, in.Metadata.Annotations, in.Spec
		if err := authorizeChange(ctx, tx, actor, next, cur); err != nil {
			return err
		}
		if err := tx.Update(ctx, next); err != nil {
			return objectErr(in, "update", err)
		}
		if err := checkReferences(ctx, tx, next); err != nil {
			return err
		}
		out = next
		return s.record(ctx, tx, actor, "update", next, cur)
	})
	return out, err
}

// Delete removes an object unless others refer to it.
func (s *Service) Delete(ctx context.Context, actor Actor, kind, name, resourceVersion string) error {
	return s.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.Get(ctx, kind, name)
		if err != nil {
			return objectErr(&resource.Object{Kind: kind, Metadata: resource.Metadata{Name: name}}, "delete", err)
		}
		if err := checkNotReferenced(ctx, tx, cur); err != nil {
			return err
		}
		if err := tx.Delete(ctx, kind, name, resourceVersion); err != nil {
			return objectErr(cur, "delete", err)
		}
		return s.record(ctx, tx, actor, "delete", nil, cur)
	})
}

// Get reads one object.
func (s *Service) Get(ctx context.Context, kind, name string) (*resource.Object, error) {
	var out *resource.Object
	err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Get(ctx, kind, name)
		return err
	})
	if err != nil {
		return nil, objectErr(&resource.Object{Kind: kind, Metadata: resource.Metadata{Name: name}}, "get", err)
	}
	return out, nil
}

// List reads a page of objects.
func (s *Service) List(ctx context.Context, kind string, opts store.ListOptions) ([]*resource.Object, string, error) {
	var out []*resource.Object
	var next string
	err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		out, next, err = tx.List(ctx, kind, opts)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list %s: %w", kind, err)
	}
	return out, next, nil
}

// MachineByMAC finds the machine that owns a MAC address (any common notation).
func (s *Service) MachineByMAC(ctx context.Context, mac string) (*resource.Object, error) {
	m, err := resource.NormalizeMAC(mac)
	if err != nil {
		return nil, invalid("mac %q: not a MAC address", mac)
	}
	var out *resource.Object
	err = s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.LookupKey(ctx, "Machine", "mac:"+m)
		return err
	})
	return out, err
}

// Events returns a machine's newest events.
func (s *Service) Events(ctx context.Context, machine string, limit int) ([]store.Event, error) {
	var out []store.Event
	err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.ListEvents(ctx, machine, limit)
		return err
	})
	return out, err
}

// record appends the audit entry for a change and, for machines, a timeline event.
func (s *Service) record(ctx context.Context, tx store.Tx, actor Actor, action string, next, prev *resource.Object) error {
	obj := next
	if obj == nil {
		obj = prev
	}
	summary := Summary(action, prev, next)
	if obj.Kind == "Machine" {
		// A BMC's address decides where its credential goes: the audit keeps both
		// values (an address is not a secret).
		if was, is := machineBMC(prev), machineBMC(next); was != nil && is != nil && was.Address != is.Address {
			summary += fmt.Sprintf(" (spec.bmc.address from %q to %q)", was.Address, is.Address)
		} else if was == nil && is != nil && prev != nil {
			summary += fmt.Sprintf(" (spec.bmc.address set to %q)", is.Address)
		}
	}
	e := &audit.Entry{Time: s.now(), Actor: actor.ID, Action: action, Kind: obj.Kind, Name: obj.Metadata.Name, Summary: summary}
	if err := tx.AppendAudit(ctx, e); err != nil {
		return fmt.Errorf("audit %s %s: %w", action, obj.Key(), err)
	}
	if obj.Kind == "Machine" && action != "delete" {
		ev := &store.Event{Machine: obj.Metadata.Name, Time: e.Time, Type: "Inventory" + capitalize(action), Message: summary + " by " + actor.ID}
		if err := tx.AddEvent(ctx, ev); err != nil {
			return fmt.Errorf("event for %s: %w", obj.Key(), err)
		}
	}
	return nil
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

// objectErr wraps err with what was being done to which object.
func objectErr(o *resource.Object, doing string, err error) error {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return err
	}
	return fmt.Errorf("%s %s %q: %w", doing, lower(o.Kind), o.Metadata.Name, err)
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// AddEvent appends an event to a machine's timeline.
func (s *Service) AddEvent(ctx context.Context, e store.Event) error {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	return s.Store.Update(ctx, func(tx store.Tx) error { return tx.AddEvent(ctx, &e) })
}

// RecordArtifactDigest stores the sha256 Kiln measured for an artifact in its status,
// with an audit entry; the operator's spec is left as written.
func (s *Service) RecordArtifactDigest(ctx context.Context, name, sum string) error {
	return s.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.Get(ctx, "Artifact", name)
		if err != nil {
			return err
		}
		next := cur.Clone()
		next.Status = json.RawMessage(`{"sha256":"` + sum + `"}`)
		if err := tx.Update(ctx, next); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, &audit.Entry{Time: s.now(), Actor: "system", Action: "record-digest",
			Kind: "Artifact", Name: name, Summary: "recorded status.sha256 on first serve"})
	})
}

// SubnetFor returns the spec of the subnet whose CIDR contains ip (the most specific).
// Subnets are few; they are read from the store on each call so replicas agree.
func (s *Service) SubnetFor(ctx context.Context, ip netip.Addr) (*resource.SubnetSpec, error) {
	subnets, _, err := s.List(ctx, "Subnet", store.ListOptions{})
	if err != nil {
		return nil, err
	}
	var best *resource.SubnetSpec
	bestBits := -1
	for _, o := range subnets {
		sp, err := resource.Typed[resource.SubnetSpec](o)
		if err != nil {
			continue
		}
		p, err := netip.ParsePrefix(sp.CIDR)
		if err == nil && p.Contains(ip) && p.Bits() > bestBits {
			best, bestBits = sp, p.Bits()
		}
	}
	if best == nil {
		return nil, store.ErrNotFound
	}
	return best, nil
}

// MachineByIP finds the machine holding a DHCP lease on ip, or else the machine that
// declares ip on one of its interfaces.
func (s *Service) MachineByIP(ctx context.Context, ip netip.Addr) (*resource.Object, error) {
	lease, err := s.Get(ctx, "Lease", ip.String())
	if err == nil {
		if ls, err := resource.Typed[resource.LeaseSpec](lease); err == nil && ls.MAC != "" {
			return s.MachineByMAC(ctx, ls.MAC)
		}
	}
	return nil, store.ErrNotFound
}
