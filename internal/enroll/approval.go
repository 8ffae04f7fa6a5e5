package enroll

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Enrollment by approval, as Puppet signs CSRs. Where Kiln cannot bind a machine to
// an address it handed out (proxy DHCP, relays it cannot see, hosts enrolled by hand),
// a profile (or one machine) says spec.enrollment: approve, and an enrollment that
// passes every other check is not issued: it is stored as a pending Enrollment, with
// its source, facts and the fingerprint of the CSR's key, until an operator approves
// or denies it. Nothing is consumed meanwhile (the token's uses count only issued
// certificates). With ApprovalWithoutToken, a host without any token may ask too.
//
// The requester collects its certificate by polling POST /enroll/requests/{id} with a
// new CSR for the same key, carrying the channel binding of the connection the poll
// is sent on. Holding the key is then proven on that very connection: the id alone
// (listed to operators, visible on the wire) gives nothing, a poll replayed on
// another connection is refused, and the connection goes on as the machine exactly
// as after an enrollment answered at once (connbind.go). Keeping the first connection
// open for hours instead would not survive a restart of Kiln or of the agent, a load
// balancer or a replica change; a fresh proof per poll does.

// Defaults of the approval mode.
const (
	DefaultApprovalTTL         = 24 * time.Hour
	DefaultMaxPendingTotal     = 1000
	DefaultMaxPendingPerSource = 5
	// approvalRetryAfter is the first poll interval Kiln suggests.
	approvalRetryAfter = 5 * time.Second
	// decidedRetention is how long decided and expired requests are kept for the record.
	decidedRetention = 7 * 24 * time.Hour
)

// Bounds of what a pending request keeps of its self-reported facts.
const (
	maxStoredFactsBytes = 16 << 10
	maxFactKeyBytes     = 64
	maxFactValueBytes   = 2 << 10
	maxFactDepth        = 4
	maxFactListItems    = 32
)

const enrollmentKind = "Enrollment"

// enrollmentMode is the mode that applies to an enrollment bound as b: the
// machine's own spec.enrollment, else its profile's as read in the transaction.
func enrollmentMode(e *enrollment, b *binding) string {
	if b.obj != nil {
		if ms, err := resource.Typed[resource.MachineSpec](b.obj); err == nil && ms.Enrollment != "" {
			return ms.Enrollment
		}
	}
	return cmp.Or(e.profileMode, resource.EnrollAutoBound)
}

// enrollmentModeOf reads a profile's spec.enrollment from its raw spec.
func enrollmentModeOf(obj *resource.Object) string {
	var p struct {
		Enrollment string `json:"enrollment"`
	}
	if len(obj.Spec) > 0 {
		_ = json.Unmarshal(obj.Spec, &p)
	}
	return cmp.Or(p.Enrollment, resource.EnrollAutoBound)
}

// divert handles an enrollment in mode approve, in its write transaction: it is kept
// pending (mode tpm is tpm.go's; another mode cannot be stored, and is refused).
func (s *Server) divert(ctx context.Context, tx store.Tx, e *enrollment, b *binding, mode string) (*EnrollResponse, error) {
	if mode != resource.EnrollApprove {
		r := refuse(http.StatusForbidden, "machine %s enrolls with spec.enrollment %q, which this Kiln does not know", b.name, mode)
		r.TokenID, r.Machine = e.claims.ID, b.name
		if b.obj == nil {
			r.Machine = ""
		}
		return nil, r
	}
	return s.holdForApproval(ctx, tx, e, b)
}

// requestWithoutToken stores the request of a host that has no token
// (ApprovalWithoutToken).
func (s *Server) requestWithoutToken(ctx context.Context, e *enrollment) (*EnrollResponse, error) {
	var resp *EnrollResponse
	err := s.st.Update(ctx, func(tx store.Tx) error {
		var err error
		resp, err = s.holdForApproval(ctx, tx, e, nil)
		return err
	})
	return resp, err
}

// holdForApproval stores an enrollment as a pending request (b: the binding it would
// get, nil for a request without a token), within the caps.
func (s *Server) holdForApproval(ctx context.Context, tx store.Tx, e *enrollment, b *binding) (*EnrollResponse, error) {
	tokID := ""
	if e.claims != nil {
		tokID = e.claims.ID
	}
	ref := func(status int, format string, a ...any) *Refusal {
		r := refuse(status, format, a...)
		r.TokenID = tokID
		return r
	}
	src := e.remote.String()
	if _, err := tx.LookupKey(ctx, enrollmentKind, "pending:"+e.csr.keyHash); err == nil {
		return nil, ref(http.StatusConflict, "a request for this key is pending already: poll it, or make a new key")
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	fromSrc, err := tx.ListKeys(ctx, enrollmentKind, "pending-from:"+src+"/")
	if err != nil {
		return nil, err
	}
	if len(fromSrc) >= cmp.Or(s.cfg.MaxPendingPerSource, DefaultMaxPendingPerSource) {
		return nil, ref(http.StatusTooManyRequests, "%d enrollment requests from %s wait for an operator already; wait for their decision", len(fromSrc), src)
	}
	all, err := tx.ListKeys(ctx, enrollmentKind, "pending:")
	if err != nil {
		return nil, err
	}
	if len(all) >= cmp.Or(s.cfg.MaxPendingEnrollments, DefaultMaxPendingTotal) {
		return nil, ref(http.StatusTooManyRequests, "%d enrollment requests wait for an operator already; retry later", len(all))
	}
	id, err := newEnrollmentID()
	if err != nil {
		return nil, err
	}
	spec := resource.EnrollmentSpec{
		State: agentwire.EnrollmentPending, Source: src, MACs: e.macs, Hostname: reportedHostname(e.req.Facts),
		Facts: boundFacts(e.req.Facts), KeyFingerprint: e.csr.keyHash, KeyType: e.csr.keyDesc,
		ExpiresAt: e.now.Add(s.approvalTTL()), TPMEKSHA256: e.tpmEK,
	}
	if len(spec.MACs) > 16 {
		spec.MACs = spec.MACs[:16]
	}
	if e.claims != nil {
		spec.Token, spec.Profile, spec.Labels = e.claims.ID, e.claims.Scope.Profile, e.claims.Scope.Labels
	}
	if b != nil {
		spec.RequestedMachine = b.name
	} else if resource.ValidateName(spec.Hostname) == nil {
		spec.RequestedMachine = spec.Hostname
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	obj := &resource.Object{Kind: enrollmentKind, Metadata: resource.Metadata{Name: id}, Spec: raw}
	if err := tx.Create(ctx, obj); err != nil {
		var kc *store.KeyConflictError
		if errors.As(err, &kc) || errors.Is(err, store.ErrExists) {
			r := ref(http.StatusConflict, "cannot store the enrollment request: %v", err)
			r.partial = true
			return nil, r
		}
		return nil, err
	}
	summary := fmt.Sprintf("enrollment request %s from %s waits for an operator (token %s, machine %s, MACs %s, %s)",
		id, src, cmp.Or(tokID, "none"), cmp.Or(spec.RequestedMachine, "-"), cmp.Or(strings.Join(spec.MACs, ", "), "-"), e.csr.keyDesc)
	if e.tpmEK != "" {
		summary += "; TPM EK " + e.tpmEK + ": approving pins it to the machine"
	}
	if err := tx.AppendAudit(ctx, &audit.Entry{Time: e.now, Actor: "enroll", Action: "enrollment-request", Kind: enrollmentKind, Name: id, Summary: summary}); err != nil {
		return nil, err
	}
	if b != nil && b.obj != nil {
		if err := tx.AddEvent(ctx, &store.Event{Machine: b.name, Time: e.now, Type: "EnrollmentPending", Message: summary}); err != nil {
			return nil, err
		}
	}
	s.log().Info("enrollment pending", "enrollment", id, "remote", src, "token_id", tokID, "machine", spec.RequestedMachine)
	return &EnrollResponse{pending: pendingAnswer(id, spec.ExpiresAt)}, nil
}

func pendingAnswer(id string, expires time.Time) *agentwire.EnrollPending {
	return &agentwire.EnrollPending{ID: id, State: agentwire.EnrollmentPending, PollPath: agentwire.EnrollRequestPath(id),
		RetryAfterSeconds: int(approvalRetryAfter / time.Second), ExpiresAt: expires}
}

func (s *Server) approvalTTL() time.Duration { return cmp.Or(s.cfg.ApprovalTTL, DefaultApprovalTTL) }

// newEnrollmentID is a random request id; it is no secret (operators list it), the
// proof of the requester's key is.
func newEnrollmentID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "enr-" + hex.EncodeToString(b), nil
}

// reportedHostname is the facts' hostname if it is a valid one.
func reportedHostname(facts map[string]any) string {
	h, _ := facts["hostname"].(string)
	h = strings.ToLower(strings.TrimSpace(h))
	if len(h) > 253 || !resource.ValidHostname(h) {
		return ""
	}
	return h
}

// boundFacts keeps of self-reported facts what an operator needs to decide, bounded:
// short keys, values of bounded size and depth, control characters replaced (the
// facts are shown in terminals), and at most maxStoredFactsBytes in all; what does
// not fit is left out and "_truncated" says so.
func boundFacts(facts map[string]any) map[string]any {
	out := map[string]any{}
	total := 0
	for _, k := range slices.Sorted(maps.Keys(facts)) {
		if len(k) > maxFactKeyBytes || k != noControls(k) {
			out["_truncated"] = true
			continue
		}
		v := boundFactValue(facts[k], 0)
		b, err := json.Marshal(v)
		if err != nil || len(b) > maxFactValueBytes || total+len(k)+len(b)+4 > maxStoredFactsBytes-64 {
			out["_truncated"] = true
			continue
		}
		total += len(k) + len(b) + 4
		out[k] = v
	}
	return out
}

func boundFactValue(v any, depth int) any {
	switch x := v.(type) {
	case string:
		return noControls(truncate(x, 256))
	case map[string]any:
		if depth >= maxFactDepth {
			return "..."
		}
		m := map[string]any{}
		for _, k := range slices.Sorted(maps.Keys(x)) {
			if len(m) >= maxFactListItems {
				break
			}
			if len(k) <= maxFactKeyBytes {
				m[noControls(k)] = boundFactValue(x[k], depth+1)
			}
		}
		return m
	case []any:
		if depth >= maxFactDepth {
			return "..."
		}
		l := make([]any, 0, min(len(x), maxFactListItems))
		for _, e := range x[:min(len(x), maxFactListItems)] {
			l = append(l, boundFactValue(e, depth+1))
		}
		return l
	case bool, float64, json.Number, nil:
		return x
	}
	return fmt.Sprint(v)
}

// noControls replaces control characters, which a terminal would interpret.
func noControls(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// nameRequest puts the request's name in front of a refusal from the binding or
// the issue, which collect shares with the other paths: a poll's refusals all
// name the request (handlePoll's own too), once.
func nameRequest(id string, err error) error {
	var r *Refusal
	if errors.As(err, &r) {
		r.Reason = fmt.Sprintf("enrollment request %s: %s", id, r.Reason)
	}
	return err
}

// ---- decisions -------------------------------------------------------------

// readEnrollment reads a request in tx; a pending one past its expiry is marked expired.
func (s *Server) readEnrollment(ctx context.Context, tx store.Tx, id string, now time.Time) (*resource.Object, *resource.EnrollmentSpec, error) {
	if resource.ValidateName(id) != nil {
		return nil, nil, refuse(http.StatusNotFound, "enrollment request %q does not exist", truncate(id, 64))
	}
	obj, err := tx.Get(ctx, enrollmentKind, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, refuse(http.StatusNotFound, "enrollment request %s does not exist", id)
	}
	if err != nil {
		return nil, nil, err
	}
	spec, err := resource.Typed[resource.EnrollmentSpec](obj)
	if err != nil {
		return nil, nil, err
	}
	if spec.State == agentwire.EnrollmentPending && !now.Before(spec.ExpiresAt) {
		spec.State = agentwire.EnrollmentExpired
		if err := writeEnrollment(ctx, tx, obj, spec); err != nil {
			return nil, nil, err
		}
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "system", Action: "enrollment-expire", Kind: enrollmentKind, Name: id,
			Summary: fmt.Sprintf("enrollment request %s from %s expired undecided at %s", id, spec.Source, spec.ExpiresAt.Format(time.RFC3339))}); err != nil {
			return nil, nil, err
		}
	}
	return obj, spec, nil
}

func writeEnrollment(ctx context.Context, tx store.Tx, obj *resource.Object, spec *resource.EnrollmentSpec) error {
	raw, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	obj.Spec = raw
	return tx.Update(ctx, obj)
}

// undecided refuses a decision on a request that is not pending.
func undecided(id string, spec *resource.EnrollmentSpec) error {
	switch spec.State {
	case agentwire.EnrollmentPending:
		return nil
	case agentwire.EnrollmentExpired:
		return refuse(http.StatusGone, "enrollment request %s expired at %s; the host must ask again", id, spec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return refuse(http.StatusConflict, "enrollment request %s was %s by %s already", id, spec.State, cmp.Or(spec.DecidedBy, "-"))
}

// ApproveEnrollment approves a pending request as machine (empty: the machine the
// request's token bound, else a new machine named from its facts). It refuses when a
// reported MAC belongs to another machine than the one it enrolls as: approving a
// host as a machine that owns one of its MACs takes naming that machine. The
// certificate is issued when the requester polls (it proves its key then).
func (s *Server) ApproveEnrollment(ctx context.Context, actor, id, machine string) (*resource.Object, error) {
	return s.ApproveEnrollmentAs(ctx, inventory.Actor{ID: actor}, id, machine)
}

// ApproveEnrollmentAs is ApproveEnrollment for an operator with a role.
func (s *Server) ApproveEnrollmentAs(ctx context.Context, who inventory.Actor, id, machine string) (*resource.Object, error) {
	if machine != "" && resource.ValidateName(machine) != nil {
		return nil, &InvalidError{Err: fmt.Errorf("machine: %q is not a valid machine name", truncate(machine, 64))}
	}
	return s.decideEnrollment(ctx, who.ID, id, "approve", "EnrollmentApproved", func(tx store.Tx, spec *resource.EnrollmentSpec, now time.Time) (string, string, error) {
		b, err := s.approvalBinding(ctx, tx, spec, machine)
		if err != nil {
			return "", "", err
		}
		if who.Role != "" && who.Role != store.RoleAdmin {
			// Approving a host as a machine hands it that machine's secrets: below
			// admin only where no Secret could be released to it (as for join tokens).
			profile, labels := spec.Profile, map[string]string(nil)
			if b.obj != nil {
				labels = b.obj.Metadata.Labels
			}
			why, err := inventory.TokenReachesSecrets(ctx, tx, profile, labels, b.name)
			if err != nil {
				return "", "", fmt.Errorf("check what machine %s may receive: %w", b.name, err)
			}
			if why != "" {
				return "", "", &inventory.ForbiddenError{Err: fmt.Errorf("role %s may not approve enrollment as machine %s, admin only: %s", who.Role, b.name, why)}
			}
		}
		spec.State, spec.Machine = agentwire.EnrollmentApproved, b.name
		// The requester has a full period to collect its certificate from the decision on.
		spec.ExpiresAt = now.Add(s.approvalTTL())
		summary := fmt.Sprintf("enrollment request %s from %s approved as machine %s (MACs %s, key %s)", id, spec.Source, b.name,
			cmp.Or(strings.Join(spec.MACs, ", "), "-"), spec.KeyFingerprint[:16])
		if spec.TPMEKSHA256 != "" {
			if err := pinApprovedEK(ctx, tx, b, spec); err != nil {
				return "", "", err
			}
			summary += "; TPM EK " + spec.TPMEKSHA256 + " pinned: the machine enrolls by attesting with it"
		}
		return summary, b.name, nil
	})
}

// DenyEnrollment denies a pending request; the requester's next poll is refused with
// the reason.
func (s *Server) DenyEnrollment(ctx context.Context, actor, id, reason string) (*resource.Object, error) {
	reason = noControls(truncate(strings.TrimSpace(reason), 500))
	return s.decideEnrollment(ctx, actor, id, "deny", "EnrollmentDenied", func(_ store.Tx, spec *resource.EnrollmentSpec, _ time.Time) (string, string, error) {
		spec.State, spec.Reason = agentwire.EnrollmentDenied, reason
		summary := fmt.Sprintf("enrollment request %s from %s denied (MACs %s): %s", id, spec.Source, cmp.Or(strings.Join(spec.MACs, ", "), "-"), cmp.Or(reason, "no reason given"))
		return summary, spec.RequestedMachine, nil
	})
}

// decideEnrollment records an operator's decision on a pending request in one
// transaction: decide sets the new state on spec and returns the summary and the
// machine whose timeline gets an event of type eventType (if it exists); the request
// is written with who decided and when, and audited as "enrollment-<verb>". A request
// already decided or expired is refused (its expiry, if just noticed, is written).
func (s *Server) decideEnrollment(ctx context.Context, actor, id, verb, eventType string,
	decide func(tx store.Tx, spec *resource.EnrollmentSpec, now time.Time) (summary, machine string, err error)) (*resource.Object, error) {
	now := s.now()
	var out *resource.Object
	var refused error
	err := s.st.Update(ctx, func(tx store.Tx) error {
		obj, spec, err := s.readEnrollment(ctx, tx, id, now)
		if err != nil {
			return err
		}
		if refused = undecided(id, spec); refused != nil {
			return nil // the expiry, if any, is written
		}
		summary, machine, err := decide(tx, spec, now)
		if err != nil {
			return err
		}
		spec.DecidedBy, spec.DecidedAt = actor, &now
		if err := writeEnrollment(ctx, tx, obj, spec); err != nil {
			return err
		}
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: actor, Action: "enrollment-" + verb, Kind: enrollmentKind, Name: id, Summary: summary}); err != nil {
			return err
		}
		if machine != "" {
			switch _, err := tx.Get(ctx, "Machine", machine); {
			case err == nil:
				if err := tx.AddEvent(ctx, &store.Event{Machine: machine, Time: now, Type: eventType, Message: summary + " by " + actor}); err != nil {
					return err
				}
			case !errors.Is(err, store.ErrNotFound):
				return err
			}
		}
		out = obj
		return nil
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return nil, fmt.Errorf("%s enrollment %s: %w", verb, truncate(id, 64), err)
	}
	return out, nil
}

// approvalBinding decides the machine an approved request enrolls as (machine: the
// operator's choice, or empty). The MAC rule holds on every path: no reported MAC may
// belong to a machine other than the one enrolled; without an explicit machine, a
// request without a token may not enroll as a machine that owns one of its MACs (the
// operator names it, knowing what that means), while a token's request keeps the
// machine its token's scope bound when it was made.
func (s *Server) approvalBinding(ctx context.Context, tx store.Tx, spec *resource.EnrollmentSpec, machine string) (*binding, error) {
	owners := map[string]bool{}
	for _, mac := range spec.MACs {
		m, err := tx.LookupKey(ctx, "Machine", "mac:"+mac)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		owners[m.Metadata.Name] = true
	}
	name := machine
	if name == "" && spec.Token != "" {
		name = spec.RequestedMachine
	}
	if name == "" {
		if len(owners) > 0 {
			o := strings.Join(slices.Sorted(maps.Keys(owners)), ", ")
			return nil, refuse(http.StatusConflict, "the reported MACs belong to machine %s: approve with --machine %s to enroll this host as it, or deny", o, o)
		}
		for _, cand := range []string{spec.RequestedMachine, macName(spec.MACs), "m-" + spec.KeyFingerprint[:12]} {
			if resource.ValidateName(cand) != nil {
				continue
			}
			if _, err := tx.Get(ctx, "Machine", cand); errors.Is(err, store.ErrNotFound) {
				name = cand
				break
			} else if err != nil {
				return nil, err
			}
		}
		if name == "" {
			return nil, refuse(http.StatusConflict, "no free machine name for this request: approve with --machine NAME")
		}
	}
	for o := range owners {
		if o != name {
			return nil, refuse(http.StatusConflict, "reported MAC belongs to machine %s, not %s: a host cannot enroll as one machine with another machine's MAC", o, name)
		}
	}
	m, err := tx.Get(ctx, "Machine", name)
	if err == nil {
		return &binding{obj: m, name: name}, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	ms := &resource.MachineSpec{Profile: spec.Profile}
	for _, mac := range spec.MACs {
		ms.Interfaces = append(ms.Interfaces, resource.Interface{MAC: mac})
	}
	if err := ms.Validate(); err != nil {
		return nil, refuse(http.StatusConflict, "machine from the request: %v", err)
	}
	return &binding{name: name, spec: ms}, nil
}

func macName(macs []string) string {
	if len(macs) == 0 {
		return ""
	}
	return "m-" + strings.ReplaceAll(macs[0], ":", "")
}

// ---- collecting the certificate ---------------------------------------------

// collect answers a poll whose proof (csr, checked against the poll's connection) is
// by the request's key: pending, refused, or the certificate of an approved request.
func (s *Server) collect(ctx context.Context, id string, e *enrollment) (*EnrollResponse, error) {
	var resp *EnrollResponse
	var answer error
	err := s.st.Update(ctx, func(tx store.Tx) error {
		obj, spec, err := s.readEnrollment(ctx, tx, id, e.now)
		if err != nil {
			return err
		}
		if spec.KeyFingerprint != e.csr.keyHash {
			r := refuse(http.StatusForbidden, "enrollment request %s was made with another key: only its requester may poll it", id)
			r.Alert = true
			return r
		}
		switch spec.State {
		case agentwire.EnrollmentPending:
			resp = &EnrollResponse{pending: pendingAnswer(id, spec.ExpiresAt)}
			return nil
		case agentwire.EnrollmentExpired:
			answer = refuse(http.StatusGone, "enrollment request %s expired at %s without a decision; enroll again", id, spec.ExpiresAt.UTC().Format(time.RFC3339))
			return nil // the expiry, if just noticed, is written
		case agentwire.EnrollmentDenied:
			return refuse(http.StatusForbidden, "enrollment request %s was denied by %s: %s", id, cmp.Or(spec.DecidedBy, "-"), cmp.Or(spec.Reason, "no reason given"))
		}
		if spec.TPMEKSHA256 != "" {
			// A TPM enrollment's approval pins the EK; the certificate comes only
			// from the attestation that follows: the agent starts over with its TPM.
			resp = &EnrollResponse{pending: &agentwire.EnrollPending{ID: id, State: agentwire.EnrollmentTPMEvidence, PollPath: agentwire.EnrollPath, ExpiresAt: spec.ExpiresAt}}
			return nil
		}
		if spec.IssuedAt != nil {
			return refuse(http.StatusConflict, "enrollment request %s: its certificate was collected already (serial %s); enroll again with a new key", id, spec.CertSerial)
		}
		if !e.now.Before(spec.ExpiresAt) {
			return refuse(http.StatusGone, "enrollment request %s was approved, but its certificate was not collected before %s; enroll again", id, spec.ExpiresAt.UTC().Format(time.RFC3339))
		}
		b, err := s.approvalBinding(ctx, tx, spec, spec.Machine)
		if err != nil {
			var r *Refusal
			if errors.As(err, &r) {
				r.Machine = spec.Machine
			}
			return nameRequest(id, err)
		}
		e.req = &EnrollRequest{Facts: spec.Facts}
		e.claims = &Claims{ID: spec.Token, Scope: Scope{Profile: spec.Profile, Labels: spec.Labels}}
		via := fmt.Sprintf("enrollment request %s approved by %s", id, cmp.Or(spec.DecidedBy, "-"))
		resp, err = s.issue(ctx, tx, e, b, via)
		if err != nil {
			return nameRequest(id, err)
		}
		if b.obj == nil {
			// The machine is created now: the approval goes on its timeline here.
			if err := tx.AddEvent(ctx, &store.Event{Machine: b.name, Time: spec.DecidedAt.UTC(), Type: "EnrollmentApproved", Message: via}); err != nil {
				return err
			}
		}
		spec.IssuedAt, spec.CertSerial = &e.now, resp.Serial
		return writeEnrollment(ctx, tx, obj, spec)
	})
	if err == nil {
		err = answer
	}
	return resp, err
}

// sweepEnrollments marks pending requests past their expiry as expired (freeing their
// places under the caps) and removes decided ones older than decidedRetention (their
// audit entries stay). It returns how many it removed.
func (s *Server) sweepEnrollments(ctx context.Context, now time.Time) (int, error) {
	var objs []*resource.Object
	err := s.st.View(ctx, func(tx store.Tx) error {
		var err error
		objs, err = listAll(ctx, tx, enrollmentKind)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sweep enrollment requests: %w", err)
	}
	removed := 0
	for _, o := range objs {
		spec, err := resource.Typed[resource.EnrollmentSpec](o)
		if err != nil {
			continue
		}
		switch {
		case spec.State == agentwire.EnrollmentPending && !now.Before(spec.ExpiresAt):
			err = s.st.Update(ctx, func(tx store.Tx) error {
				_, _, err := s.readEnrollment(ctx, tx, o.Metadata.Name, now)
				return err
			})
		case spec.State != agentwire.EnrollmentPending && now.Sub(cmp.Or(ptrTime(spec.DecidedAt), spec.ExpiresAt)) > decidedRetention:
			err = s.st.Update(ctx, func(tx store.Tx) error {
				return tx.Delete(ctx, enrollmentKind, o.Metadata.Name, "")
			})
			if err == nil {
				removed++
			}
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return removed, fmt.Errorf("sweep enrollment request %s: %w", o.Metadata.Name, err)
		}
	}
	return removed, nil
}

func ptrTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
