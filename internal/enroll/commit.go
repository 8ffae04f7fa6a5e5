package enroll

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// The enrollment's write transaction: the checks that need the store (the stored
// token, the profile's policy still the one checked), then binding (binding.go) and
// issuing (issue.go); and registration by MAC alone.

// commit runs the checks that need the store and, if they pass, binds the machine,
// issues the certificate and counts the use, in a write transaction: a token with N
// uses enrolls N machines, also with several replicas on one database. Concurrent
// enrollments share a transaction (see batch.go).
func (s *Server) commit(ctx context.Context, e *enrollment) (*EnrollResponse, error) {
	return s.batches.submit(ctx, s, e)
}

// commitOne is one enrollment's part of a write transaction. A *Refusal it returns
// means it wrote nothing, unless the refusal is marked partial. With br (a shared
// transaction) the token's new use count is written by br.flush.
func (s *Server) commitOne(ctx context.Context, tx store.Tx, br *batchReads, e *enrollment) (*EnrollResponse, error) {
	c := e.claims
	ref := func(status int, format string, a ...any) *Refusal {
		r := refuse(status, format, a...)
		r.TokenID, r.Machine = c.ID, c.Scope.Machine
		return r
	}
	if err := br.profileCheck(ctx, tx, s, e); err != nil {
		return nil, err
	}
	t, err := br.token(ctx, tx, c.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ref(http.StatusUnauthorized, "token %s is unknown to this Kiln (deleted, or never issued here)", c.ID)
	}
	if err != nil {
		return nil, err
	}
	tok, spec, ts := t.obj, t.spec, t.status
	if subtle.ConstantTimeCompare([]byte(spec.Hash), []byte(e.tokenHash)) != 1 {
		if c.Scope.Boot {
			return nil, ref(http.StatusUnauthorized, "per-boot token %s was superseded: the machine was reprovisioned since", c.ID)
		}
		return nil, ref(http.StatusUnauthorized, "token %s does not match the token issued under that id", c.ID)
	}
	if spec.Revoked || ts.RevokedAt != nil {
		return nil, ref(http.StatusUnauthorized, "token %s is revoked", c.ID)
	}
	if spec.ExpiresAt != nil && !e.now.Before(*spec.ExpiresAt) {
		return nil, ref(http.StatusUnauthorized, "token %s expired at %s", c.ID, spec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if spec.MaxUses > 0 && ts.Uses >= spec.MaxUses {
		if c.Scope.Boot {
			r := ref(http.StatusUnauthorized, "per-boot token %s was already used (by %s at %s): someone else may have enrolled with it first; reboot the machine for a new token and investigate",
				c.ID, cmp.Or(ts.LastMachine, "-"), timeOrDash(ts.LastUsedAt))
			r.Alert = true
			return nil, r
		}
		return nil, ref(http.StatusUnauthorized, "token %s is used up (%d of %d uses)", c.ID, ts.Uses, spec.MaxUses)
	}
	b, err := s.bind(ctx, tx, e)
	if err != nil {
		return nil, err
	}
	switch mode := enrollmentMode(e, b); mode {
	case resource.EnrollAutoBound:
	case resource.EnrollTPM:
		// tpm.go: a challenge, a request for evidence or approval, or a refusal,
		// nothing issued and the token's use not counted; or attested, and issued.
		if resp, err := s.tpmGate(ctx, tx, e, b); resp != nil || err != nil {
			return resp, err
		}
	default:
		return s.divert(ctx, tx, e, b, mode) // approval.go: nothing issued, the token's use not counted
	}
	resp, err := s.issue(ctx, tx, e, b, "token "+c.ID)
	if err != nil {
		return nil, err
	}
	ts.Uses++
	ts.LastUsedAt, ts.LastMachine = &e.now, b.name
	t.status, t.used = ts, true
	if br == nil {
		tok.Status, _ = json.Marshal(ts)
		if err := tx.Update(ctx, tok); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// commitByMAC enrolls a machine on its MAC alone (RegisterByMAC): it must be a known
// machine in state provisioning, and exactly one machine must own the reported MACs.
func (s *Server) commitByMAC(ctx context.Context, e *enrollment) (*EnrollResponse, error) {
	var resp *EnrollResponse
	err := s.st.Update(ctx, func(tx store.Tx) error {
		var found *resource.Object
		for _, mac := range e.macs {
			m, err := tx.LookupKey(ctx, "Machine", "mac:"+mac)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if found != nil && found.Metadata.Name != m.Metadata.Name {
				return refuse(http.StatusForbidden, "registration by MAC: the reported MACs belong to several machines")
			}
			found = m
		}
		if found == nil {
			return refuse(http.StatusForbidden, "registration by MAC: no machine has the reported MACs (%s)", cmp.Or(strings.Join(e.macs, ", "), "-"))
		}
		if st := machineCertStatus(found).State; st != resource.StateProvisioning {
			r := refuse(http.StatusForbidden, "registration by MAC: machine %s is %s, not provisioning", found.Metadata.Name, cmp.Or(st, "-"))
			r.Machine = found.Metadata.Name
			return r
		}
		if err := s.mayEnroll(ctx, tx, e, found); err != nil {
			return err
		}
		var err error
		resp, err = s.issue(ctx, tx, e, &binding{obj: found, name: found.Metadata.Name}, "its MAC alone (registration by MAC is on)")
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// timeOrDash formats an optional time for a refusal's reason.
func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
