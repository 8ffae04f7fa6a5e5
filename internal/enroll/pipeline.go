package enroll

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/attest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// The enrollment pipeline before the store: a request's token (signature, times,
// scope), the CEL policies (the token's, the profile's), the CSR and its channel
// binding, then the hand-over to a write transaction (commit.go).

// clockSkew is how far ahead of a token's nbf a machine's enrollment may come.
const clockSkew = 30 * time.Second

// enrollment is one enrollment in progress.
type enrollment struct {
	req *EnrollRequest
	// channel is the channel binding of the connection the request came on (set by
	// the HTTP handler), for a CSR that carries one.
	channel   []byte
	remote    netip.Addr
	now       time.Time
	claims    *Claims // nil: registration by MAC
	tokenHash string
	macs      []string
	csr       *csrInfo
	// presigned is the certificate signed before the write transaction for the name
	// the binding most likely gives; used if the binding in the transaction agrees.
	presigned *issued
	// profilePolicy is the token profile's enrollPolicy the enrollment was checked
	// against; the write transaction refuses to go on if the profile's is another.
	profilePolicy []string
	// profileMode is the profile's spec.enrollment as read in the write transaction.
	profileMode string
	// tpmResult is a verified TPM answer, tpmErr why it failed (tpm.go); tpmEK the
	// EK of a TPM enrollment held for approval.
	tpmResult *attest.Result
	tpmErr    error
	tpmEK     string
	// tpmStatus is what issue writes to status.tpm; tpmFailed what a refused
	// quote writes there after the refusal.
	tpmStatus        *tpmStatus
	tpmFailed        *tpmStatus
	tpmFailedMachine string
}

// Enroll checks an enrollment and, if every check passes, binds the machine and issues
// its certificate; remote is the request's source address. A refusal is a *Refusal;
// nothing is issued or consumed then, and the caller records it (RecordRefusal).
func (s *Server) Enroll(ctx context.Context, req *EnrollRequest, remote netip.Addr) (*EnrollResponse, error) {
	return s.enrollOnChannel(ctx, req, nil, remote)
}

// enrollOnChannel is Enroll for a request that came on a connection whose channel
// binding is channel (nil: unknown).
func (s *Server) enrollOnChannel(ctx context.Context, req *EnrollRequest, channel []byte, remote netip.Addr) (*EnrollResponse, error) {
	start := time.Now()
	resp, err := s.enroll(ctx, req, channel, remote)
	if s.OnEnroll != nil {
		outcome := "issued"
		var ref *Refusal
		switch {
		case errors.As(err, &ref):
			outcome = fmt.Sprintf("refused-%d", ref.Status)
		case err != nil:
			outcome = "error"
		case resp.pending != nil:
			outcome = "pending"
		}
		s.OnEnroll(outcome, time.Since(start))
	}
	return resp, err
}

func (s *Server) enroll(ctx context.Context, req *EnrollRequest, channel []byte, remote netip.Addr) (*EnrollResponse, error) {
	e := &enrollment{req: req, channel: channel, remote: remote.Unmap(), now: s.now()}
	if req.Facts == nil {
		req.Facts = map[string]any{}
	}
	e.macs = FactMACs(req.Facts)
	facts, err := policyFacts(req.Facts, 0)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "facts: %v", err)
	}
	if req.Token == "" {
		if !s.cfg.RegisterByMAC && !s.cfg.ApprovalWithoutToken {
			return nil, refuse(http.StatusUnauthorized, "token: missing (enrollment needs a join token; registration by MAC alone is switched off, and so is approval without a token)")
		}
		if e.csr, err = parseCSR(req.CSR); err != nil {
			return nil, refuse(http.StatusBadRequest, "%v", err)
		}
		if err := e.checkChannel(); err != nil {
			return nil, refuse(http.StatusBadRequest, "%v", err)
		}
		if !s.cfg.RegisterByMAC {
			return s.requestWithoutToken(ctx, e)
		}
		resp, err := s.commitByMAC(ctx, e)
		if resp != nil {
			resp.channelBound = e.csr.channel != nil
		}
		return resp, err
	}

	// From here to its submission the enrollment is on its way to a batch.
	s.batches.preparing.Add(1)
	preparing := true
	defer func() {
		if preparing {
			s.batches.preparing.Add(-1)
		}
	}()
	e.tokenHash = tokenHash(req.Token)
	c, ok := s.verified.get(e.tokenHash)
	if !ok {
		var err error
		if c, err = parseToken(s.ca.tokenPub, req.Token); err != nil {
			return nil, refuse(http.StatusUnauthorized, "%v", err)
		}
		if resource.ValidateName(c.ID) != nil {
			return nil, refuse(http.StatusUnauthorized, "token: malformed id")
		}
		s.verified.put(e.tokenHash, c)
	}
	e.claims = c
	ref := func(status int, format string, a ...any) *Refusal {
		r := refuse(status, format, a...)
		r.TokenID, r.Machine = c.ID, c.Scope.Machine
		return r
	}
	if c.NotBefore != 0 && e.now.Before(time.Unix(c.NotBefore, 0).Add(-clockSkew)) {
		return nil, ref(http.StatusUnauthorized, "token %s is not valid before %s", c.ID, time.Unix(c.NotBefore, 0).UTC().Format(time.RFC3339))
	}
	if exp := time.Unix(c.Expires, 0); !e.now.Before(exp) {
		return nil, ref(http.StatusUnauthorized, "token %s expired at %s", c.ID, exp.UTC().Format(time.RFC3339))
	}
	if len(c.Scope.CIDRs) > 0 {
		ok := false
		for _, p := range c.Scope.CIDRs {
			if pfx, err := netip.ParsePrefix(p); err == nil && pfx.Contains(e.remote) {
				ok = true
				break
			}
		}
		if !ok {
			return nil, ref(http.StatusForbidden, "token %s may only be used from %s; this request comes from %s", c.ID, strings.Join(c.Scope.CIDRs, ", "), e.remote)
		}
	}
	if c.Scope.Addr != "" && c.Scope.Addr != e.remote.String() {
		// A per-boot token is good only where Kiln sent the machine: taken off the
		// wire and used elsewhere, it is refused without being consumed, so the
		// machine itself can still enroll with it.
		r := ref(http.StatusForbidden, "per-boot token %s was issued to machine %s at %s, the address Kiln leased to it; this enrollment comes from %s",
			c.ID, c.Scope.Machine, c.Scope.Addr, e.remote)
		r.Alert = true
		return nil, r
	}
	if len(c.Scope.MACs) > 0 && !slices.ContainsFunc(e.macs, func(m string) bool { return slices.Contains(c.Scope.MACs, m) }) {
		reported := "no MAC"
		if len(e.macs) > 0 {
			reported = strings.Join(e.macs, ", ")
		}
		return nil, ref(http.StatusForbidden, "token %s is for MAC %s; the machine reported %s", c.ID, strings.Join(c.Scope.MACs, ", "), reported)
	}
	vars := map[string]any{
		"facts": facts,
		"token": map[string]any{
			"id": c.ID, "profile": c.Scope.Profile, "machine": c.Scope.Machine, "labels": stringMap(c.Scope.Labels),
			"macs": stringList(c.Scope.MACs), "cidrs": stringList(c.Scope.CIDRs), "boot": c.Scope.Boot,
			"issuer": c.Issuer, "expires": c.Expires,
		},
		"request": map[string]any{"remote_ip": e.remote.String(), "macs": stringList(e.macs), "time": e.now.Unix()},
	}
	if err := s.policy.check(ctx, "token", c.Scope.Policy, vars); err != nil {
		return nil, ref(http.StatusForbidden, "%v", err)
	}
	// The CSR is parsed now, for the read below, but its verdict comes after the
	// profile's policy, in the order refusals are documented.
	var csrErr error
	e.csr, csrErr = parseCSR(req.CSR)
	// The profile's policy, as last read; the write transaction checks it is still the
	// profile's, else it is read and evaluated again. A refusal is never made on a
	// cached policy: it is read again first.
	for attempt := 0; ; attempt++ {
		fresh := attempt > 0
		policy, err := s.profilePolicy(ctx, c.Scope.Profile, fresh)
		if err != nil {
			var r *Refusal
			if errors.As(err, &r) {
				r.TokenID, r.Machine = c.ID, c.Scope.Machine
			}
			return nil, err
		}
		if err := s.policy.check(ctx, fmt.Sprintf("profile %q", c.Scope.Profile), policy, vars); err != nil {
			if !fresh {
				continue
			}
			return nil, ref(http.StatusForbidden, "%v", err)
		}
		if csrErr != nil {
			return nil, ref(http.StatusBadRequest, "%v", csrErr)
		}
		if err := e.checkChannel(); err != nil {
			return nil, ref(http.StatusBadRequest, "%v", err)
		}
		e.profilePolicy = policy
		s.verifyTPMAnswer(e)
		if e.presigned == nil {
			e.presign(s)
		}
		if preparing {
			s.batches.preparing.Add(-1)
			preparing = false
		}
		resp, err := s.commit(ctx, e)
		if errors.Is(err, errProfileChanged) && attempt < 3 {
			continue
		}
		if err != nil && e.tpmFailed != nil {
			s.recordAttestationFailure(ctx, e.tpmFailedMachine, e.tpmFailed)
		}
		if resp != nil {
			resp.channelBound = e.csr.channel != nil
		}
		return resp, err
	}
}

// errProfileChanged: the profile's enrollPolicy in the write transaction is not the
// one the enrollment was checked against (it changed since it was read): the
// enrollment is checked again with the new one.
var errProfileChanged = errors.New("the profile's enrollPolicy changed meanwhile")

// profilePolicy returns a profile's spec.enrollPolicy as last read, or reads it
// (fresh: always). The cache only saves reads: the write transaction compares what
// an enrollment was checked against with the stored profile (profileCheck).
func (s *Server) profilePolicy(ctx context.Context, profile string, fresh bool) ([]string, error) {
	if !fresh {
		if p, ok := s.profiles.Load(profile); ok {
			return p.([]string), nil
		}
	}
	var obj *resource.Object
	err := s.st.View(ctx, func(tx store.Tx) error {
		var err error
		obj, err = tx.Get(ctx, "Profile", profile)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		s.profiles.Delete(profile)
		return nil, refuse(http.StatusForbidden, "the token's profile %q does not exist", profile)
	}
	if err != nil {
		return nil, err
	}
	policy := enrollPolicyOf(obj)
	s.profiles.Store(profile, policy)
	return policy, nil
}

// enrollPolicyOf reads spec.enrollPolicy from the raw spec, so that this works
// before and after resource.ProfileSpec has the field.
func enrollPolicyOf(obj *resource.Object) []string {
	var p struct {
		EnrollPolicy []string `json:"enrollPolicy"`
	}
	if len(obj.Spec) > 0 {
		_ = json.Unmarshal(obj.Spec, &p)
	}
	if p.EnrollPolicy == nil {
		return []string{}
	}
	return p.EnrollPolicy
}

// presign signs the certificate before the write transaction, for the machine the
// binding will most likely name, so that writers (serialized, across replicas too)
// do not wait on signatures: the one the token names, else that of a new machine.
// The transaction binds for good and signs anew in the rare case it names another
// machine.
func (e *enrollment) presign(s *Server) {
	name := e.claims.Scope.Machine
	if name == "" {
		for _, n := range newMachineNames(e) {
			if resource.ValidateName(n) == nil {
				name = n
				break
			}
		}
	}
	if name != "" && e.csr.checkName(name) == nil {
		if cert, err := s.ca.issueClient(name, e.csr.pub, e.now, s.cfg.CertTTL); err == nil {
			e.presigned = cert
		}
	}
}

// checkChannel checks the CSR's channel binding, if it has one, against the request's
// connection.
func (e *enrollment) checkChannel() error {
	if e.csr.channel == nil {
		return nil
	}
	if e.channel == nil || subtle.ConstantTimeCompare(e.csr.channel, e.channel) != 1 {
		return csrErr("its TLS channel binding is not that of this connection: a CSR made for another connection (replayed or relayed) is refused")
	}
	return nil
}

// claimsCache remembers tokens whose signature verified, by hash, so that a
// multi-use token (a batch of machines, an image) is verified once. Only the
// signature is cached: expiry, revocation and uses are checked every time.
type claimsCache struct {
	mu sync.Mutex
	m  map[string]*Claims
}

func (c *claimsCache) get(hash string) (*Claims, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.m[hash]
	return cl, ok
}

func (c *claimsCache) put(hash string, cl *Claims) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= 4096 {
		c.m = make(map[string]*Claims)
	}
	c.m[hash] = cl
}

// stringList and stringMap give CEL the []any and map[string]any it evaluates.
func stringList(in []string) []any {
	out := make([]any, len(in))
	for i, s := range in {
		out[i] = s
	}
	return out
}

func stringMap(in map[string]string) map[string]any {
	out := make(map[string]any, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}
