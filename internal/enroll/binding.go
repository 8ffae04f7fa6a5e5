package enroll

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
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
//   - else a reported MAC belongs to a machine: that one, if the token's MAC scope
//     covers it, or if the machine was never enrolled and has the token's profile
//     (or none); an enrolled machine is not taken over by a generic token;
//   - else a new machine with the token's profile and labels.
func (s *Server) bind(ctx context.Context, tx store.Tx, e *enrollment) (*binding, error) {
	c := e.claims
	ref := func(status int, machine, format string, a ...any) *Refusal {
		r := refuse(status, format, a...)
		r.TokenID, r.Machine = c.ID, machine
		return r
	}
	owners := map[string]bool{}
	var ownerObj *resource.Object
	for _, mac := range e.macs {
		m, err := tx.LookupKey(ctx, "Machine", "mac:"+mac)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !owners[m.Metadata.Name] {
			owners[m.Metadata.Name] = true
			ownerObj = m
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
		return &binding{obj: m, name: name}, nil
	}
	switch len(owners) {
	case 0:
		return s.newBinding(ctx, tx, e, "")
	case 1:
	default:
		return nil, ref(http.StatusForbidden, "", "the reported MACs belong to several machines (%s); enroll with a token for one of them", strings.Join(slices.Sorted(maps.Keys(owners)), ", "))
	}
	m := ownerObj
	if len(c.Scope.MACs) > 0 {
		return &binding{obj: m, name: m.Metadata.Name}, nil
	}
	cs := machineCertStatus(m)
	ms, err := resource.Typed[resource.MachineSpec](m)
	if err != nil {
		return nil, err
	}
	if cs.CertFingerprint != "" {
		return nil, ref(http.StatusForbidden, m.Metadata.Name, "machine %s is already enrolled; enrolling it again needs a token for it (join-token create --machine %s or --mac)", m.Metadata.Name, m.Metadata.Name)
	}
	if ms.Profile != "" && ms.Profile != c.Scope.Profile {
		return nil, ref(http.StatusForbidden, m.Metadata.Name, "machine %s has profile %s; token %s is for profile %s", m.Metadata.Name, ms.Profile, c.ID, c.Scope.Profile)
	}
	return &binding{obj: m, name: m.Metadata.Name}, nil
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
