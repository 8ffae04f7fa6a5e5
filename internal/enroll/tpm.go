package enroll

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/attest"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// TPM-bound enrollment (spec.enrollment: tpm; the exchange is described in
// agentwire/tpm.go). What Kiln trusts, in order: the EK through the machine's pin
// (spec.tpm.ekSHA256, or status.tpm.ekSHA256 written when an operator approved the
// first enrollment: trust on first use only by an operator's decision) and, with
// --tpm-ek-roots, the vendor chain of its certificate; the AK through credential
// activation on that EK; the PCRs through the AK's quote over Kiln's single-use
// nonce; the events through their replay to those PCRs. Only then does the
// profile's measured-boot policy look at what was booted, and only then is the
// certificate issued.

// tpmStatus is status.tpm of a machine.
type tpmStatus struct {
	// EKSHA256 is the pinned EK (set by an approval, or copied from spec.tpm).
	EKSHA256 string `json:"ekSHA256,omitempty"`
	// AKPublic is the activated AK (TPMT_PUBLIC): renewals must quote with it.
	AKPublic []byte `json:"akPublic,omitempty"`
	// Attestation is the verdict of the last quote: ok, unchecked (policy off),
	// warned (differs, policy warn) or failed.
	Attestation string     `json:"attestation,omitempty"`
	LastQuoteAt *time.Time `json:"lastQuoteAt,omitempty"`
	// Changes are how the last quote differs from the profile's baseline.
	Changes []string `json:"changes,omitempty"`
	// Measurements of the last verified quote (events left out: they are in the
	// profile's baseline and in the quote's log).
	Measurements *attest.Measurements `json:"measurements,omitempty"`
}

// Attestation verdicts in status.tpm.attestation.
const (
	AttestationOK        = "ok"
	AttestationUnchecked = "unchecked"
	AttestationWarned    = "warned"
	AttestationFailed    = "failed"
)

// machineTPM reads status.tpm of a machine (zero if none).
func machineTPM(m *resource.Object) tpmStatus {
	var st struct {
		TPM tpmStatus `json:"tpm"`
	}
	if m != nil && len(m.Status) > 0 {
		_ = json.Unmarshal(m.Status, &st)
	}
	return st.TPM
}

// ekPin is the EK pinned for the machine bound as b: its spec's, else the one an
// approval recorded in its status; empty: none yet.
func ekPin(b *binding) string {
	if b.obj == nil {
		if b.spec != nil && b.spec.TPM != nil {
			return b.spec.TPM.EKSHA256
		}
		return ""
	}
	if ms, err := resource.Typed[resource.MachineSpec](b.obj); err == nil && ms.TPM != nil && ms.TPM.EKSHA256 != "" {
		return ms.TPM.EKSHA256
	}
	return machineTPM(b.obj).EKSHA256
}

// verifyTPMAnswer checks a TPM answer before the write transaction (the challenge is
// used up here, once, even if the transaction is retried); the transaction then
// only compares the result with the machine's pin and the profile's baseline.
func (s *Server) verifyTPMAnswer(e *enrollment) {
	t := e.req.TPM
	if t == nil || t.Answer == nil || e.tpmResult != nil || e.tpmErr != nil {
		return
	}
	res, err := s.tpmChallenges.Verify(t.Answer.ChallengeID, tpmChallengeOwner(e), attestAnswer(t.Answer))
	if err != nil {
		e.tpmErr = err
		return
	}
	e.tpmResult = &res
}

// tpmChallengeOwner binds a challenge to the key of the CSR it was issued for:
// the answer must come with a CSR for the same key (the agent's), so that a
// challenge seen on the wire is worth nothing to another host.
func tpmChallengeOwner(e *enrollment) string { return "key:" + e.csr.keyHash }

func attestAnswer(a *agentwire.TPMAnswer) attest.Answer {
	out := attest.Answer{ActivatedSecret: a.ActivatedSecret, EventLog: a.EventLog}
	for _, q := range a.Quotes {
		out.Quotes = append(out.Quotes, attest.Quote{Quote: q.Quote, Signature: q.Signature})
	}
	for _, p := range a.PCRs {
		out.PCRs = append(out.PCRs, attest.PCR{Index: p.Index, SHA256: p.Alg == "sha256", Digest: p.Digest})
	}
	return out
}

// tpmGate is the TPM step of an enrollment in mode tpm, in its write transaction.
// It returns an answer (a challenge, or a request for evidence, or pending
// approval) or a refusal; (nil, nil) means the machine attested and the certificate
// may be issued (e.tpmStatus is then what issue writes to status.tpm).
func (s *Server) tpmGate(ctx context.Context, tx store.Tx, e *enrollment, b *binding) (*EnrollResponse, error) {
	ref := func(status int, alert bool, format string, a ...any) *Refusal {
		r := refuse(status, format, a...)
		r.TokenID, r.Machine, r.Alert = e.claims.ID, b.name, alert
		return r
	}
	pin := ekPin(b)
	t := e.req.TPM
	switch {
	case t == nil:
		return &EnrollResponse{pending: &agentwire.EnrollPending{ID: "tpm", State: agentwire.EnrollmentTPMEvidence, PollPath: agentwire.EnrollPath,
			ExpiresAt: e.now.Add(attest.DefaultChallengeTTL)}}, nil
	case e.tpmErr != nil:
		return nil, ref(http.StatusForbidden, true, "machine %s: TPM attestation refused: %v", b.name, e.tpmErr)
	case e.tpmResult != nil:
		res := e.tpmResult
		if pin == "" || res.EKSHA256 != pin {
			return nil, ref(http.StatusForbidden, true, "machine %s: the attested TPM's EK %s is not the pinned %s", b.name, res.EKSHA256, cmp.Or(pin, "(none)"))
		}
		st, err := s.measuredBoot(ctx, tx, e, b, res)
		if err != nil {
			return nil, err
		}
		e.tpmStatus = st
		return nil, nil
	}
	ek, err := attest.ParseEK(t.EKPublic, t.EKCertificate)
	if err != nil {
		return nil, ref(http.StatusBadRequest, false, "tpm.%v", err)
	}
	if pin == "" {
		// Trust on first use only as an operator's decision: the request waits,
		// showing the EK (and, with vendor roots, only a vendor-certified one).
		if s.ekRoots != nil {
			if err := s.ekRoots.Verify(ek); err != nil {
				return nil, ref(http.StatusForbidden, true, "machine %s: TPM %v", b.name, err)
			}
		}
		e.tpmEK = ek.SHA256
		return s.holdForApproval(ctx, tx, e, b)
	}
	if err := attest.CheckEK(ek, pin, s.ekRoots); err != nil {
		if errors.Is(err, attest.ErrEKMismatch) {
			return nil, ref(http.StatusForbidden, true, "machine %s: TPM EK %s is not the pinned %s: another TPM (another machine, or a host with a spoofed MAC) tried to enroll as it",
				b.name, ek.SHA256, pin)
		}
		return nil, ref(http.StatusForbidden, true, "machine %s: TPM %v", b.name, err)
	}
	ch, err := s.tpmChallenges.Activation(tpmChallengeOwner(e), ek, attest.AKParams{
		Public: t.AK.Public, CreateData: t.AK.CreateData, CreateAttestation: t.AK.CreateAttestation, CreateSignature: t.AK.CreateSignature,
	})
	if errors.Is(err, attest.ErrTooManyChallenges) {
		return nil, ref(http.StatusTooManyRequests, false, "%v", err)
	}
	if err != nil {
		return nil, ref(http.StatusBadRequest, false, "tpm.%v", err)
	}
	return &EnrollResponse{pending: &agentwire.EnrollPending{ID: ch.ID, State: agentwire.EnrollmentTPMChallenge, PollPath: agentwire.EnrollPath, ExpiresAt: ch.Expires,
		TPMChallenge: &agentwire.TPMChallenge{ID: ch.ID, Nonce: ch.Nonce, Credential: ch.Credential, Secret: ch.Secret, ExpiresAt: ch.Expires}}}, nil
}

// profileBaseline is status.attestationBaseline of a profile.
type profileBaseline struct {
	Baseline *attest.Measurements `json:"attestationBaseline,omitempty"`
	// From says which machine's boot set the baseline, and when, or who accepted it.
	From string     `json:"attestationBaselineFrom,omitempty"`
	At   *time.Time `json:"attestationBaselineAt,omitempty"`
}

// measuredBoot applies the profile's measured-boot policy to a verified quote
// (learn the baseline on the first good boot, then compare) and returns the
// machine's new status.tpm; enforce refuses a differing boot.
func (s *Server) measuredBoot(ctx context.Context, tx store.Tx, e *enrollment, b *binding, res *attest.Result) (*tpmStatus, error) {
	profileName := ""
	if b.obj != nil {
		if ms, err := resource.Typed[resource.MachineSpec](b.obj); err == nil {
			profileName = ms.Profile
		}
	} else if b.spec != nil {
		profileName = b.spec.Profile
	}
	m := res.Measurements
	st := &tpmStatus{EKSHA256: res.EKSHA256, AKPublic: res.AKPublic, LastQuoteAt: &res.QuotedAt, Attestation: AttestationUnchecked,
		Measurements: &attest.Measurements{PCRs: m.PCRs, SecureBoot: m.SecureBoot, SecureBootKeys: m.SecureBootKeys, Firmware: m.Firmware,
			BootApplications: m.BootApplications, Kernel: m.Kernel, Initrd: m.Initrd, UKI: m.UKI}}
	if profileName == "" {
		return st, nil
	}
	prof, err := tx.Get(ctx, "Profile", profileName)
	if errors.Is(err, store.ErrNotFound) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	ps, err := resource.Typed[resource.ProfileSpec](prof)
	if err != nil {
		return nil, err
	}
	policy := ps.Attestation
	if policy == "" {
		policy = resource.AttestEnforce // the machine enrolls by TPM: enforce unless said otherwise
	}
	if policy == resource.AttestOff {
		return st, nil
	}
	// What Kiln served: the expected values derived from its own artifacts.
	var served []string
	if s.BootApplications != nil {
		served = s.servedKernelCheck(ctx, tx, profileName, ps, &m)
		st.Measurements.KernelArtifact = m.KernelArtifact
	}
	var pb profileBaseline
	if len(prof.Status) > 0 {
		_ = json.Unmarshal(prof.Status, &pb)
	}
	if pb.Baseline == nil && len(served) == 0 {
		// Learn: the first good boot of the profile's artifacts is the baseline.
		from := "the first attested boot, of machine " + b.name
		raw, err := mergeStatus(prof.Status, map[string]any{"attestationBaseline": m, "attestationBaselineFrom": from, "attestationBaselineAt": e.now})
		if err != nil {
			return nil, err
		}
		prof = prof.Clone()
		prof.Status = raw
		if err := tx.Update(ctx, prof); err != nil {
			return nil, err
		}
		summary := fmt.Sprintf("profile %s: measured-boot baseline learned from %s (kernel %s, initrd %s, secure boot %t)",
			profileName, from, shortDigest(m.Kernel), shortDigest(m.Initrd), m.SecureBoot)
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: e.now, Actor: "enroll", Action: "attestation-baseline", Kind: "Profile", Name: profileName, Summary: summary}); err != nil {
			return nil, err
		}
		st.Attestation = AttestationOK
		return st, nil
	}
	var changes []attest.Change
	if pb.Baseline != nil {
		changes = attest.Compare(*pb.Baseline, m)
	}
	if len(changes) == 0 && len(served) == 0 {
		st.Attestation = AttestationOK
		return st, nil
	}
	lines := served
	for _, c := range changes {
		lines = append(lines, c.String())
	}
	var what string
	switch {
	case pb.Baseline == nil:
		what = fmt.Sprintf("measured boot is not what Kiln served profile %s (no baseline learned from it): %s", profileName, strings.Join(lines, "; "))
	case len(served) > 0:
		what = fmt.Sprintf("measured boot is not what Kiln served profile %s and differs from its baseline (%s): %s", profileName, cmp.Or(pb.From, "-"), strings.Join(lines, "; "))
	default:
		what = fmt.Sprintf("measured boot differs from profile %s's baseline (%s): %s", profileName, cmp.Or(pb.From, "-"), strings.Join(lines, "; "))
	}
	if policy == resource.AttestEnforce {
		r := refuse(http.StatusForbidden, "machine %s: %s; attestation is enforced: no certificate (accept the new boot with `kiln attestation accept %s` if it is intended)", b.name, what, b.name)
		r.TokenID, r.Machine, r.Alert = e.claims.ID, b.name, true
		if b.obj != nil {
			e.tpmFailedMachine = b.name
		}
		// The events are kept for a differing boot (only then): accepting it as
		// the new baseline keeps event-level detail for the next comparison.
		e.tpmFailed = &tpmStatus{EKSHA256: res.EKSHA256, AKPublic: res.AKPublic, LastQuoteAt: &res.QuotedAt, Attestation: AttestationFailed, Changes: lines, Measurements: &m}
		return nil, r
	}
	st.Attestation, st.Changes, st.Measurements = AttestationWarned, lines, &m
	if err := tx.AppendAudit(ctx, &audit.Entry{Time: e.now, Actor: "enroll", Action: "attestation-alert", Kind: "Machine", Name: b.name, Summary: "machine " + b.name + ": " + what}); err != nil {
		return nil, err
	}
	if b.obj != nil {
		if err := tx.AddEvent(ctx, &store.Event{Machine: b.name, Time: e.now, Type: "AttestationAlert", Message: what + " (attestation: warn, the machine goes on)"}); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func shortDigest(d string) string {
	if len(d) > 16 {
		return d[:16]
	}
	return cmp.Or(d, "-")
}

// recordAttestationFailure writes a refused quote's verdict to the machine's
// status.tpm (the refusal itself wrote nothing): secrets that require attestation
// are then refused to the machine's older certificate too.
func (s *Server) recordAttestationFailure(ctx context.Context, machine string, st *tpmStatus) {
	if machine == "" {
		return
	}
	err := s.st.Update(ctx, func(tx store.Tx) error {
		m, err := tx.Get(ctx, "Machine", machine)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		m = m.Clone()
		if m.Status, err = mergeStatus(m.Status, map[string]any{"tpm": st}); err != nil {
			return err
		}
		return tx.Update(ctx, m)
	})
	if err != nil {
		s.log().Error("record a failed attestation", "machine", machine, "err", err)
	}
}

// pinApprovedEK writes the EK of an approved TPM enrollment request to the
// machine's status.tpm (creating the machine if the approval names a new one): the
// operator's decision is the trust on first use.
func pinApprovedEK(ctx context.Context, tx store.Tx, b *binding, spec *resource.EnrollmentSpec) error {
	if b.obj != nil {
		if pin := ekPin(b); pin != "" && pin != spec.TPMEKSHA256 {
			return refuse(http.StatusConflict, "machine %s has TPM EK %s pinned already, not the request's %s: deny the request, or change the machine's pin first", b.name, pin, spec.TPMEKSHA256)
		}
		m := b.obj.Clone()
		st := machineTPM(m)
		st.EKSHA256 = spec.TPMEKSHA256
		raw, err := mergeStatus(m.Status, map[string]any{"tpm": st})
		if err != nil {
			return err
		}
		m.Status = raw
		return tx.Update(ctx, m)
	}
	ms, err := json.Marshal(b.spec)
	if err != nil {
		return err
	}
	raw, err := mergeStatus(nil, map[string]any{"state": resource.StateNew, "tpm": tpmStatus{EKSHA256: spec.TPMEKSHA256}})
	if err != nil {
		return err
	}
	var labels map[string]string
	if len(spec.Labels) > 0 {
		labels = spec.Labels
	}
	return tx.Create(ctx, &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: b.name, Labels: labels}, Spec: ms, Status: raw})
}

// AcceptRequest is the body of POST /api/v1/attestation/accept: one of Machine (its
// last quoted boot becomes its profile's baseline) or Profile (the baseline is
// forgotten: the profile's next attested boot sets it).
type AcceptRequest struct {
	Machine string `json:"machine,omitempty"`
	Profile string `json:"profile,omitempty"`
}

// AcceptAttestation accepts a new measured-boot baseline (see AcceptRequest) and
// returns the profile. Audited as attestation-accept; a machine whose boot was
// accepted is attested again (status.tpm.attestation ok) without a new quote.
func (s *Server) AcceptAttestation(ctx context.Context, actor string, req AcceptRequest) (*resource.Object, error) {
	if (req.Machine == "") == (req.Profile == "") {
		return nil, &InvalidError{Err: errors.New("give one of machine (accept its last boot) or profile (learn from its next boot)")}
	}
	for field, v := range map[string]string{"machine": req.Machine, "profile": req.Profile} {
		if v != "" && resource.ValidateName(v) != nil {
			return nil, &InvalidError{Err: fmt.Errorf("%s: %q is not a valid name", field, truncate(v, 64))}
		}
	}
	now := s.now()
	var out *resource.Object
	err := s.st.Update(ctx, func(tx store.Tx) error {
		profile, set, summary := req.Profile, map[string]any{"attestationBaseline": nil, "attestationBaselineFrom": nil, "attestationBaselineAt": nil}, ""
		if req.Machine != "" {
			m, err := tx.Get(ctx, "Machine", req.Machine)
			if err != nil {
				return fmt.Errorf("machine %s: %w", req.Machine, err)
			}
			ms, err := resource.Typed[resource.MachineSpec](m)
			if err != nil {
				return err
			}
			st := machineTPM(m)
			if st.Measurements == nil || st.LastQuoteAt == nil {
				return &InvalidError{Err: fmt.Errorf("machine %s has no verified TPM quote to accept", req.Machine)}
			}
			if ms.Profile == "" {
				return &InvalidError{Err: fmt.Errorf("machine %s has no profile", req.Machine)}
			}
			profile = ms.Profile
			from := fmt.Sprintf("the boot of machine %s quoted at %s, accepted by %s", req.Machine, st.LastQuoteAt.UTC().Format(time.RFC3339), actor)
			set = map[string]any{"attestationBaseline": st.Measurements, "attestationBaselineFrom": from, "attestationBaselineAt": now}
			summary = fmt.Sprintf("profile %s: measured-boot baseline set to %s (kernel %s, initrd %s)", profile, from, shortDigest(st.Measurements.Kernel), shortDigest(st.Measurements.Initrd))
			st.Attestation, st.Changes = AttestationOK, nil
			mm := m.Clone()
			if mm.Status, err = mergeStatus(mm.Status, map[string]any{"tpm": st}); err != nil {
				return err
			}
			if err := tx.Update(ctx, mm); err != nil {
				return err
			}
			if err := tx.AddEvent(ctx, &store.Event{Machine: req.Machine, Time: now, Type: "AttestationAccepted", Message: summary}); err != nil {
				return err
			}
		} else {
			summary = fmt.Sprintf("profile %s: measured-boot baseline forgotten by %s; the next attested boot sets it", profile, actor)
		}
		p, err := tx.Get(ctx, "Profile", profile)
		if err != nil {
			return fmt.Errorf("profile %s: %w", profile, err)
		}
		p = p.Clone()
		if p.Status, err = mergeStatus(p.Status, set); err != nil {
			return err
		}
		if err := tx.Update(ctx, p); err != nil {
			return err
		}
		out = p
		return tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: actor, Action: "attestation-accept", Kind: "Profile", Name: profile, Summary: summary})
	})
	if err != nil {
		return nil, fmt.Errorf("accept attestation baseline: %w", err)
	}
	return out, nil
}

func (s *Server) opAcceptAttestation(w http.ResponseWriter, r *http.Request) {
	var req AcceptRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	obj, err := s.AcceptAttestation(r.Context(), s.actor(r), req)
	if err != nil {
		s.opFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

// renewQuote is a renewal's TPM step: the verified answer (or why it failed), the
// challenge to send, or the failed verdict to record.
type renewQuote struct {
	owner     string
	result    *attest.Result
	err       error
	challenge *agentwire.EnrollPending
	failed    *tpmStatus
}

// renewTPMGate: a machine enrolled by TPM (it has an AK) renews only with a fresh
// quote by that AK that passes its profile's policy. Without an answer it sets
// rq.challenge (answered 202, nothing written); with a good one it adds status.tpm
// to set.
func (s *Server) renewTPMGate(ctx context.Context, tx store.Tx, m *resource.Object, now time.Time, rq *renewQuote, set map[string]any) error {
	ts := machineTPM(m)
	if len(ts.AKPublic) == 0 {
		return nil
	}
	name := m.Metadata.Name
	alert := func(format string, a ...any) *Refusal {
		r := refuse(http.StatusForbidden, format, a...)
		r.Machine, r.Alert = name, true
		return r
	}
	switch {
	case rq.err != nil:
		return alert("machine %s: renewal refused: TPM re-quote: %v", name, rq.err)
	case rq.result == nil:
		ch, err := s.tpmChallenges.Requote(rq.owner, ts.EKSHA256, ts.AKPublic)
		if err != nil {
			return err
		}
		rq.challenge = &agentwire.EnrollPending{ID: ch.ID, State: agentwire.EnrollmentTPMChallenge, PollPath: agentwire.RenewPath, ExpiresAt: ch.Expires,
			TPMChallenge: &agentwire.TPMChallenge{ID: ch.ID, Nonce: ch.Nonce, ExpiresAt: ch.Expires}}
		return nil
	case !bytes.Equal(rq.result.AKPublic, ts.AKPublic):
		return alert("machine %s: renewal refused: the quote is not by the machine's attestation key", name)
	}
	e := &enrollment{now: now, claims: &Claims{}}
	st, err := s.measuredBoot(ctx, tx, e, &binding{obj: m, name: name}, rq.result)
	if err != nil {
		rq.failed = e.tpmFailed
		return err
	}
	set["tpm"] = st
	return nil
}

// servedKernelCheck compares the last EFI application the firmware measured into
// PCR 4 (the kernel's EFI stub, or the UKI) with the Authenticode digests of the
// kernel and UKI Kiln serves profile ps: the expected value derived from Kiln's own
// artifacts, which needs no learned baseline. It records the matching artifact in
// m.KernelArtifact and returns the differences (none when they match, when the
// log measured no application, as a BIOS boot does, or when the profile's
// artifacts are not PE images).
func (s *Server) servedKernelCheck(ctx context.Context, tx store.Tx, profile string, ps *resource.ProfileSpec, m *attest.Measurements) []string {
	if m.Kernel == "" {
		return nil
	}
	apps, err := s.BootApplications(ctx, tx, ps)
	if err != nil {
		// Fail closed: what cannot be checked is not taken as what Kiln served.
		return []string{fmt.Sprintf("pcr 4: the booted kernel %s cannot be checked against profile %s's artifacts: %v", shortDigest(m.Kernel), profile, err)}
	}
	if len(apps) == 0 {
		return nil
	}
	if what, ok := apps[m.Kernel]; ok {
		m.KernelArtifact = what
		return nil
	}
	var want []string
	for d, what := range apps {
		want = append(want, what+" "+shortDigest(d))
	}
	slices.Sort(want)
	return []string{fmt.Sprintf("pcr 4: the booted kernel %s is not what Kiln serves profile %s (Authenticode of %s)", shortDigest(m.Kernel), profile, strings.Join(want, ", "))}
}
