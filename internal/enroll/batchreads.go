package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// What a shared write transaction (batch.go) reads once for all its enrollments.

// txToken is a join token as read in a write transaction.
type txToken struct {
	obj    *resource.Object
	spec   *resource.JoinTokenSpec
	status tokenStatus
	used   bool // status changed: to write
}

// batchReads keeps what a shared transaction has read: the join tokens, so that a
// token several of its enrollments use (a batch of machines, an image) is read and
// written once per transaction (each enrollment still sees the uses of the ones
// before it), and the profiles' enrollPolicy. A nil *batchReads reads every time
// and keeps nothing (a transaction of one enrollment).
type batchReads struct {
	tokens   map[string]*txToken
	profiles map[string]txProfile
}

// txProfile is what an enrollment needs of its profile, as read in a write transaction.
type txProfile struct {
	policy []string
	mode   string // spec.enrollment (approval.go)
}

func newBatchReads() *batchReads {
	return &batchReads{tokens: map[string]*txToken{}, profiles: map[string]txProfile{}}
}

// profileCheck checks, in the write transaction, that the enrollment's profile exists
// and has the enrollPolicy the enrollment was checked against.
func (br *batchReads) profileCheck(ctx context.Context, tx store.Tx, s *Server, e *enrollment) error {
	name := e.claims.Scope.Profile
	p, ok := txProfile{}, false
	if br != nil {
		p, ok = br.profiles[name]
	}
	if !ok {
		obj, err := tx.Get(ctx, "Profile", name)
		if errors.Is(err, store.ErrNotFound) {
			s.profiles.Delete(name)
			r := refuse(http.StatusForbidden, "the token's profile %q does not exist", name)
			r.TokenID, r.Machine = e.claims.ID, e.claims.Scope.Machine
			return r
		}
		if err != nil {
			return err
		}
		p = txProfile{policy: enrollPolicyOf(obj), mode: enrollmentModeOf(obj)}
		if br != nil {
			br.profiles[name] = p
		}
	}
	if !slices.Equal(p.policy, e.profilePolicy) {
		s.profiles.Store(name, p.policy)
		return errProfileChanged
	}
	e.profileMode = p.mode
	return nil
}

// token reads a join token, from the batch if it has it.
func (br *batchReads) token(ctx context.Context, tx store.Tx, id string) (*txToken, error) {
	if br != nil {
		if t, ok := br.tokens[id]; ok {
			return t, nil
		}
	}
	obj, err := tx.Get(ctx, "JoinToken", id)
	if err != nil {
		return nil, err
	}
	spec, err := resource.Typed[resource.JoinTokenSpec](obj)
	if err != nil {
		return nil, err
	}
	t := &txToken{obj: obj, spec: spec}
	if len(obj.Status) > 0 {
		_ = json.Unmarshal(obj.Status, &t.status)
	}
	if br != nil {
		br.tokens[id] = t
	}
	return t, nil
}

// flush writes the tokens the transaction used.
func (br *batchReads) flush(ctx context.Context, tx store.Tx) error {
	for _, t := range br.tokens {
		if !t.used {
			continue
		}
		t.obj.Status, _ = json.Marshal(t.status)
		if err := tx.Update(ctx, t.obj); err != nil {
			return err
		}
	}
	return nil
}
