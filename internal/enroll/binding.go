package enroll

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/workflow"
)

// Which machine an enrollment binds, and the name of a new one.

// binding is the machine an enrollment binds: an existing one, or one to create.
type binding struct {
	obj  *resource.Object // nil: create
	name string
	spec *resource.MachineSpec // for a new machine
}

// bind decides which machine an enrollment is for:
//   - the token names a machine: that one (created if it does not exist yet); the
//     reported MACs must not belong to another machine;
//   - the token is scoped to MACs: the machine that owns the reported MACs inside the
//     scope (created if none does); a reported MAC outside the scope that belongs to
//     another machine refuses the enrollment, so facts cannot point a token for one
//     MAC at another machine (issue 13);
//   - else a reported MAC belongs to a machine: that one;
//   - else a new machine with the token's profile and labels.
//
// An existing machine is bound only if mayEnroll allows it: on every path, the
// token's profile must be the machine's, and a machine holding a valid certificate
// is enrolled again only within an operator's reprovision.
func (s *Server) bind(ctx context.Context, tx store.Tx, e *enrollment) (*binding, error) {
	c := e.claims
	ref := func(status int, machine, format string, a ...any) *Refusal {
		r := refuse(status, format, a...)
		r.TokenID, r.Machine = c.ID, machine
		return r
	}
	// owners maps each machine owning a reported MAC to the first such MAC; macOwner
	// each reported MAC to the machine owning it.
	owners, macOwner := map[string]string{}, map[string]string{}
	objs := map[string]*resource.Object{}
	for _, mac := range e.macs {
		m, err := tx.LookupKey(ctx, "Machine", "mac:"+mac)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		macOwner[mac] = m.Metadata.Name
		if _, ok := owners[m.Metadata.Name]; !ok {
			owners[m.Metadata.Name], objs[m.Metadata.Name] = mac, m
		}
	}
	if name := c.Scope.Machine; name != "" {
		for o := range owners {
			if o != name {
				return nil, ref(http.StatusForbidden, name, "token %s is for machine %s, but the reported MACs belong to machine %s", c.ID, name, o)
			}
		}
		m, err := tx.Get(ctx, "Machine", name)
		if errors.Is(err, store.ErrNotFound) {
			return s.newBinding(ctx, tx, e, name)
		}
		if err != nil {
			return nil, err
		}
		if err := s.mayEnroll(ctx, tx, e, m); err != nil {
			return nil, err
		}
		return &binding{obj: m, name: name}, nil
	}
	if len(c.Scope.MACs) > 0 {
		chosen := ""
		for _, mac := range e.macs {
			if o := macOwner[mac]; o != "" && chosen == "" && slices.Contains(c.Scope.MACs, mac) {
				chosen = o
			}
		}
		for _, o := range slices.Sorted(maps.Keys(owners)) {
			if o != chosen {
				return nil, ref(http.StatusForbidden, o, "token %s is for MAC %s; the reported MAC %s belongs to machine %s, outside the token's scope",
					c.ID, strings.Join(c.Scope.MACs, ", "), owners[o], o)
			}
		}
		if chosen == "" {
			return s.newBinding(ctx, tx, e, "")
		}
		if err := s.mayEnroll(ctx, tx, e, objs[chosen]); err != nil {
			return nil, err
		}
		return &binding{obj: objs[chosen], name: chosen}, nil
	}
	switch len(owners) {
	case 0:
		return s.newBinding(ctx, tx, e, "")
	case 1:
	default:
		return nil, ref(http.StatusForbidden, "", "the reported MACs belong to several machines (%s); enroll with a token for one of them", strings.Join(slices.Sorted(maps.Keys(owners)), ", "))
	}
	var m *resource.Object
	for _, o := range objs {
		m = o
	}
	if err := s.mayEnroll(ctx, tx, e, m); err != nil {
		return nil, err
	}
	return &binding{obj: m, name: m.Metadata.Name}, nil
}

// mayEnroll holds on every path that binds an existing machine: the token's profile
// must be the machine's (or the machine has none), and a machine that already holds
// a valid certificate is enrolled again only within an operator's reprovision, once:
// it is in state provisioning and its certificate predates the running workflow.
// Otherwise it keeps its identity: it renews with its certificate.
func (s *Server) mayEnroll(ctx context.Context, tx store.Tx, e *enrollment, m *resource.Object) error {
	c := e.claims // nil: registration by MAC, which has no token and no profile to check
	name := m.Metadata.Name
	ref := func(format string, a ...any) *Refusal {
		r := refuse(http.StatusForbidden, format, a...)
		r.Machine = name
		if c != nil {
			r.TokenID = c.ID
		}
		return r
	}
	ms, err := resource.Typed[resource.MachineSpec](m)
	if err != nil {
		return fmt.Errorf("bind machine %s: %w", name, err)
	}
	if c != nil && ms.Profile != "" && ms.Profile != c.Scope.Profile {
		return ref("machine %s has profile %s; token %s is for profile %s", name, ms.Profile, c.ID, c.Scope.Profile)
	}
	cs := machineCertStatus(m)
	if cs.CertFingerprint == "" || cs.CertNotAfter == nil || !e.now.Before(*cs.CertNotAfter) {
		return nil
	}
	if cs.State == resource.StateProvisioning {
		wf, st, err := workflow.Current(ctx, tx, name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("bind machine %s: read its workflow: %w", name, err)
		}
		if wf != nil && (cs.EnrolledAt == nil || cs.EnrolledAt.Before(st.CreatedAt)) {
			return nil
		}
	}
	return ref("machine %s is already enrolled: it holds a valid certificate (serial %s, until %s): it renews with it; enrolling it again needs an operator's reprovision (kiln machine reprovision %s)",
		name, cs.CertSerial, cs.CertNotAfter.UTC().Format(time.RFC3339), name)
}

// newBinding plans a new machine. Without a name from the token it is the reported
// hostname when that is a free, valid name, else m-<first MAC>, else m-<key hash>.
func (s *Server) newBinding(ctx context.Context, tx store.Tx, e *enrollment, name string) (*binding, error) {
	c := e.claims
	free := func(n string) (bool, error) {
		if resource.ValidateName(n) != nil {
			return false, nil
		}
		_, err := tx.Get(ctx, "Machine", n)
		if errors.Is(err, store.ErrNotFound) {
			return true, nil
		}
		return false, err
	}
	if name == "" {
		cands := newMachineNames(e)
		for _, cand := range cands[:len(cands)-1] {
			ok, err := free(cand)
			if err != nil {
				return nil, err
			}
			if ok {
				name = cand
				break
			}
		}
		if name == "" {
			name = cands[len(cands)-1]
		}
	}
	spec := &resource.MachineSpec{Profile: c.Scope.Profile}
	for _, mac := range e.macs {
		spec.Interfaces = append(spec.Interfaces, resource.Interface{MAC: mac, Name: interfaceName(e.req.Facts, mac)})
	}
	if err := spec.Validate(); err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Reason: "machine from facts: " + err.Error(), TokenID: c.ID}
	}
	return &binding{name: name, spec: spec}, nil
}

// newMachineNames are the names a new machine may get, in order: the reported
// hostname, m-<first MAC>, and last m-<key hash>, which is always taken (derived
// from the key, it is never another machine's).
func newMachineNames(e *enrollment) []string {
	var out []string
	if h, ok := e.req.Facts["hostname"].(string); ok {
		h = strings.ToLower(strings.TrimSpace(h))
		if h != "" && h != "localhost" && !strings.HasPrefix(h, "localhost.") {
			out = append(out, h)
		}
	}
	if len(e.macs) > 0 {
		out = append(out, "m-"+strings.ReplaceAll(e.macs[0], ":", ""))
	}
	return append(out, "m-"+e.csr.keyHash[:12])
}
