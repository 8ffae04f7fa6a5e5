package enroll

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/httpjson"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// EnrollRequest is the body of POST /enroll; agentwire defines it for both sides.
type EnrollRequest = agentwire.EnrollRequest

// EnrollResponse is the answer to POST /enroll: agentwire's (the JSON the agent
// reads), with what the server keeps about the issue for binding the connection.
type EnrollResponse struct {
	agentwire.EnrollResponse

	issued *issued
	// channelBound: the CSR carried the request connection's channel binding.
	channelBound bool
}

// Refusal is a request Kiln refused: its status, a reason safe to show the client (it
// never contains the token), and what it concerns.
type Refusal struct {
	Status  int
	Reason  string
	Machine string // the machine concerned, when known: it gets a timeline event
	TokenID string // the token's id, once its signature verified
	Alert   bool   // a sign of attack (a per-boot token used twice)
	// partial: the refused enrollment wrote to its transaction before it was refused.
	partial bool
}

func (r *Refusal) Error() string { return r.Reason }

func refuse(status int, format string, a ...any) *Refusal {
	return &Refusal{Status: status, Reason: fmt.Sprintf(format, a...)}
}

// clockSkew is how far ahead of a token's nbf a machine's enrollment may come.
const clockSkew = 30 * time.Second

// Internal kinds of objects this package stores (not in resource.Kinds).
const (
	// enrollKeyKind records each enrolled public key ("k-" + SHA-256 of its SPKI), so
	// that a replayed enrollment (the same CSR again) is refused.
	enrollKeyKind = "EnrollKey"
	// revocationKind records a revoked certificate (name: serial, hex) for the CRL.
	revocationKind = "CertRevocation"
	// bootCertKind maps an exported iPXE client certificate (name: its fingerprint) to
	// its machine.
	bootCertKind = "EnrollBootCert"
)

// tokenStatus is a JoinToken's status, owned by Kiln.
type tokenStatus struct {
	Uses        int        `json:"uses"`
	LastUsedAt  *time.Time `json:"lastUsedAt,omitempty"`
	LastMachine string     `json:"lastMachine,omitempty"`
	RevokedAt   *time.Time `json:"revokedAt,omitempty"`
}

// certStatus is the part of a machine's status this package reads and writes. Other
// status fields are kept as they are (see mergeStatus).
type certStatus struct {
	State           string     `json:"state,omitempty"`
	CertFingerprint string     `json:"certFingerprint,omitempty"`
	CertSerial      string     `json:"certSerial,omitempty"`
	CertNotAfter    *time.Time `json:"certNotAfter,omitempty"`
}

func machineCertStatus(m *resource.Object) certStatus {
	var cs certStatus
	if len(m.Status) > 0 {
		_ = json.Unmarshal(m.Status, &cs)
	}
	return cs
}

// mergeStatus sets (or, for nil values, removes) fields of a status object and keeps
// the others: the workflow engine and this package write different fields.
func mergeStatus(raw json.RawMessage, set map[string]any) (json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("stored status: %w", err)
		}
	}
	for k, v := range set {
		if v == nil {
			delete(m, k)
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		m[k] = b
	}
	return json.Marshal(m)
}

func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// FactMACs returns the MAC addresses in an agent's facts, normalized and without
// duplicates: facts.boot_mac first (the interface the machine netbooted from), then
// facts.interfaces[].mac and facts.nics[].mac. Entries that are not MACs are skipped: facts are
// self-reported and may be odd; they only ever narrow what a token can do.
func FactMACs(facts map[string]any) []string {
	var out []string
	seen := map[string]bool{}
	add := func(v any) {
		s, ok := v.(string)
		if !ok || len(out) >= 64 {
			return
		}
		m, err := resource.NormalizeMAC(s)
		if err != nil || seen[m] {
			return
		}
		seen[m] = true
		out = append(out, m)
	}
	add(facts["boot_mac"])
	for _, key := range []string{"interfaces", "nics"} {
		if ifs, ok := facts[key].([]any); ok {
			for _, i := range ifs {
				if im, ok := i.(map[string]any); ok {
					add(im["mac"])
				}
			}
		}
	}
	return out
}

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
		if !s.cfg.RegisterByMAC {
			return nil, refuse(http.StatusUnauthorized, "token: missing (enrollment needs a join token; registration by MAC alone is switched off)")
		}
		if e.csr, err = parseCSR(req.CSR); err != nil {
			return nil, refuse(http.StatusBadRequest, "%v", err)
		}
		if err := e.checkChannel(); err != nil {
			return nil, refuse(http.StatusBadRequest, "%v", err)
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
	if len(c.Scope.MACs) > 0 && !anyIn(e.macs, c.Scope.MACs) {
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

// commit runs the checks that need the store and, if they pass, binds the machine,
// issues the certificate and counts the use, in a write transaction: a token with N
// uses enrolls N machines, also with several replicas on one database. Concurrent
// enrollments share a transaction (see batch.go).
func (s *Server) commit(ctx context.Context, e *enrollment) (*EnrollResponse, error) {
	return s.batches.submit(ctx, s, e)
}

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
	profiles map[string][]string
}

func newBatchReads() *batchReads {
	return &batchReads{tokens: map[string]*txToken{}, profiles: map[string][]string{}}
}

// profileCheck checks, in the write transaction, that the enrollment's profile exists
// and has the enrollPolicy the enrollment was checked against.
func (br *batchReads) profileCheck(ctx context.Context, tx store.Tx, s *Server, e *enrollment) error {
	name := e.claims.Scope.Profile
	policy, ok := []string(nil), false
	if br != nil {
		policy, ok = br.profiles[name]
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
		policy = enrollPolicyOf(obj)
		if br != nil {
			br.profiles[name] = policy
		}
	}
	if !slices.Equal(policy, e.profilePolicy) {
		s.profiles.Store(name, policy)
		return errProfileChanged
	}
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
			return nil, ref(http.StatusUnauthorized, "per-boot token %s was superseded: the machine fetched a newer boot script since", c.ID)
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
				c.ID, orDash(ts.LastMachine), timeOrDash(ts.LastUsedAt))
			r.Alert = true
			return nil, r
		}
		return nil, ref(http.StatusUnauthorized, "token %s is used up (%d of %d uses)", c.ID, ts.Uses, spec.MaxUses)
	}
	b, err := s.bind(ctx, tx, e)
	if err != nil {
		return nil, err
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
		return nil, ref(http.StatusForbidden, "", "the reported MACs belong to several machines (%s); enroll with a token for one of them", strings.Join(sortedKeys(owners), ", "))
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

// interfaceName is the reported name of the interface with mac, if it is a plain one.
func interfaceName(facts map[string]any, mac string) string {
	ifs, _ := facts["interfaces"].([]any)
	nics, _ := facts["nics"].([]any)
	for _, i := range append(ifs, nics...) {
		im, _ := i.(map[string]any)
		m, _ := im["mac"].(string)
		if n, err := resource.NormalizeMAC(m); err != nil || n != mac {
			continue
		}
		if name, ok := im["name"].(string); ok && len(name) <= 15 && !strings.ContainsAny(name, "/ \t\n") {
			return name
		}
	}
	return ""
}

// issue checks the CSR's names and the replay record, signs the certificate, writes
// the machine (created, or its status updated), the audit entry and the event. The
// caller's transaction makes it all or nothing.
func (s *Server) issue(ctx context.Context, tx store.Tx, e *enrollment, b *binding, via string) (*EnrollResponse, error) {
	tokID := ""
	if e.claims != nil {
		tokID = e.claims.ID
	}
	if err := e.csr.checkName(b.name); err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Reason: err.Error(), Machine: b.name, TokenID: tokID}
	}
	rec, _ := json.Marshal(map[string]any{"machine": b.name, "via": via, "at": e.now})
	err := tx.Create(ctx, &resource.Object{Kind: enrollKeyKind, Metadata: resource.Metadata{Name: "k-" + e.csr.keyHash}, Spec: rec})
	if errors.Is(err, store.ErrExists) {
		return nil, &Refusal{Status: http.StatusConflict, Machine: b.name, TokenID: tokID,
			Reason: "replayed enrollment: this public key was already enrolled; the agent must generate a new key for each enrollment"}
	}
	if err != nil {
		return nil, err
	}
	cert := e.presigned
	if cert == nil || cert.name != b.name {
		if cert, err = s.ca.issueClient(b.name, e.csr.pub, e.now, s.cfg.CertTTL); err != nil {
			return nil, err
		}
	}
	fp, serial := cert.fingerprint, cert.serial
	set := map[string]any{
		"certFingerprint": fp, "certSerial": serial, "certNotAfter": cert.notAfter,
		"facts": e.req.Facts, "lastSeen": e.now, "enrolledAt": e.now,
	}
	created := b.obj == nil
	var m *resource.Object
	if created {
		set["state"] = resource.StateNew
		spec, _ := json.Marshal(b.spec)
		st, err := mergeStatus(nil, set)
		if err != nil {
			return nil, err
		}
		var labels map[string]string
		if e.claims != nil && len(e.claims.Scope.Labels) > 0 {
			labels = e.claims.Scope.Labels
		}
		m = &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: b.name, Labels: labels}, Spec: spec, Status: st}
		if err := tx.Create(ctx, m); err != nil {
			var kc *store.KeyConflictError
			if errors.As(err, &kc) {
				// The replay record is written already: in a shared transaction this
				// enrollment must be redone alone.
				return nil, &Refusal{Status: http.StatusConflict, Machine: b.name, TokenID: tokID, Reason: fmt.Sprintf("cannot create machine %s: %v", b.name, kc), partial: true}
			}
			return nil, err
		}
	} else {
		m = b.obj.Clone()
		if machineCertStatus(m).State == "" {
			set["state"] = resource.StateNew
		}
		st, err := mergeStatus(m.Status, set)
		if err != nil {
			return nil, err
		}
		m.Status = st
		if err := tx.Update(ctx, m); err != nil {
			return nil, err
		}
	}
	what := "enrolled"
	if created {
		what = fmt.Sprintf("created (profile %s) and enrolled", b.spec.Profile)
	}
	summary := fmt.Sprintf("%s with %s from %s: certificate serial %s, fingerprint %s, %s, expires %s",
		what, via, e.remote, serial, fp[:16], e.csr.keyDesc, cert.notAfter.Format(time.RFC3339))
	if e.csr.channel != nil {
		summary += "; the CSR was bound to its TLS connection, which goes on as the machine"
	}
	if err := tx.AppendAudit(ctx, &audit.Entry{Time: e.now, Actor: "enroll", Action: "enroll", Kind: "Machine", Name: b.name, Summary: summary}); err != nil {
		return nil, err
	}
	if err := tx.AddEvent(ctx, &store.Event{Machine: b.name, Time: e.now, Type: "Enrolled", Message: summary}); err != nil {
		return nil, err
	}
	return s.response(cert, e.now), nil
}

func (s *Server) response(c *issued, now time.Time) *EnrollResponse {
	return &EnrollResponse{EnrollResponse: agentwire.EnrollResponse{
		Machine: c.name, Certificate: certPEM(c.der), CAChain: string(s.ca.chainPEM), CAFingerprint: s.ca.fingerprint,
		Serial: c.serial, NotAfter: c.notAfter, RenewAfter: now.Add(c.notAfter.Sub(now) * 2 / 3),
	}, issued: c}
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
			return refuse(http.StatusForbidden, "registration by MAC: no machine has the reported MACs (%s)", orDash(strings.Join(e.macs, ", ")))
		}
		if st := machineCertStatus(found).State; st != resource.StateProvisioning {
			r := refuse(http.StatusForbidden, "registration by MAC: machine %s is %s, not provisioning", found.Metadata.Name, orDash(st))
			r.Machine = found.Metadata.Name
			return r
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

// RecordRefusal writes a refusal's audit entry and, for a known machine, its timeline
// event ("EnrollRefused", or "EnrollAlert" for a sign of attack). It never records the
// token, only its id once verified.
func (s *Server) RecordRefusal(ctx context.Context, action string, ref *Refusal, remote string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	summary := fmt.Sprintf("%s (from %s)", ref.Reason, remote)
	act := action + "-refused"
	evType := "EnrollRefused"
	if action != "enroll" {
		evType = "AgentRefused"
	}
	if ref.Alert {
		act, evType = action+"-alert", "EnrollAlert"
	}
	kind, name := "Machine", ref.Machine
	if name == "" && ref.TokenID != "" {
		kind, name = "JoinToken", ref.TokenID
	}
	if name == "" {
		kind, name = "Enrollment", "-"
	}
	err := s.st.Update(ctx, func(tx store.Tx) error {
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: s.now(), Actor: "enroll", Action: act, Kind: kind, Name: name, Summary: truncate(summary, 1000)}); err != nil {
			return err
		}
		if ref.Machine == "" {
			return nil
		}
		if _, err := tx.Get(ctx, "Machine", ref.Machine); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		}
		return tx.AddEvent(ctx, &store.Event{Machine: ref.Machine, Time: s.now(), Type: evType, Message: truncate(summary, 1000)})
	})
	l := s.log().With("action", act, "machine", ref.Machine, "token_id", ref.TokenID, "remote", remote, "reason", ref.Reason)
	if err != nil {
		l.Error("cannot record a refusal", "err", err)
	} else if ref.Alert {
		l.Warn("possible attack: refused")
	} else {
		l.Info("refused")
	}
}

// handleEnroll serves POST /enroll.
func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	remote := remoteAddr(r)
	fail := func(ref *Refusal) {
		s.RecordRefusal(r.Context(), "enroll", ref, remote.String())
		writeError(w, ref.Status, ref.Reason)
	}
	if r.TLS == nil {
		fail(refuse(http.StatusForbidden, "enrollment is HTTPS only: use Kiln's https:// URL"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			fail(refuse(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", mb.Limit))
			return
		}
		fail(refuse(http.StatusBadRequest, "read body: %v", err))
		return
	}
	var req EnrollRequest
	var channel []byte
	if cb, err := r.TLS.ExportKeyingMaterial(ChannelBindingLabel, nil, channelBindingBytes); err == nil {
		channel = cb
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		fail(refuse(http.StatusBadRequest, "malformed JSON: %s", truncate(err.Error(), 200)))
		return
	}
	if dec.More() {
		fail(refuse(http.StatusBadRequest, "malformed JSON: data after the request object"))
		return
	}
	resp, err := s.enrollOnChannel(r.Context(), &req, channel, remote)
	if err != nil {
		var ref *Refusal
		if errors.As(err, &ref) {
			fail(ref)
			return
		}
		s.log().Error("enroll", "remote", remote, "err", err)
		writeError(w, http.StatusServiceUnavailable, "enrollment failed on the server (store unavailable); retry later")
		return
	}
	resp.BoundConnection = bindConnection(r, resp)
	s.log().Info("enrolled", "machine", resp.Machine, "serial", resp.Serial, "remote", remote, "bound_connection", resp.BoundConnection)
	writeJSON(w, http.StatusOK, resp)
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		a, _ := netip.ParseAddr(r.RemoteAddr)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

// ErrorResponse is the body of every error, as in the operator API.
type ErrorResponse = httpjson.ErrorResponse

var (
	writeError = httpjson.Error
	writeJSON  = httpjson.Write
)

func anyIn(have, allowed []string) bool {
	for _, h := range have {
		for _, a := range allowed {
			if h == a {
				return true
			}
		}
	}
	return false
}

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

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
