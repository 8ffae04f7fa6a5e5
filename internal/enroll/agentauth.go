package enroll

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// AgentIdentity is the machine an agent API request comes from.
type AgentIdentity struct {
	Machine     string
	Fingerprint string
	Serial      string
	NotAfter    time.Time
	// Object is the machine as read when the request was authenticated.
	Object *resource.Object
}

type identityKey struct{}

// MachineFromContext returns the identity AgentAuth established.
func MachineFromContext(ctx context.Context) (*AgentIdentity, bool) {
	id, ok := ctx.Value(identityKey{}).(*AgentIdentity)
	return id, ok
}

// Identity is MachineFromContext in the shape of workflow.Identity.
func (s *Server) Identity(r *http.Request) (string, bool) {
	id, ok := MachineFromContext(r.Context())
	if !ok {
		return "", false
	}
	return id.Machine, true
}

// AgentAuth lets a request through only with a client certificate that this CA issued
// for client authentication, that is unexpired, whose machine exists and whose
// fingerprint is the machine's current one (status.certFingerprint). That last check,
// made on every request, is what revocation and re-enrollment act on: revoking clears
// it, renewing or re-enrolling replaces it, and the old certificate stops working at
// once. A refusal is a 401 that says why, with an audit entry.
func (s *Server) AgentAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.authenticate(r.Context(), r)
		if err != nil {
			var ref *Refusal
			if errors.As(err, &ref) {
				s.RecordRefusal(r.Context(), "agent", ref, remoteAddr(r).String())
				writeError(w, ref.Status, ref.Reason)
				return
			}
			s.log().Error("agent authentication", "err", err)
			writeError(w, http.StatusServiceUnavailable, "cannot check the certificate: store unavailable")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

func (s *Server) authenticate(ctx context.Context, r *http.Request) (*AgentIdentity, error) {
	if r.TLS == nil {
		return nil, refuse(http.StatusUnauthorized, "the agent API needs HTTPS with the machine's client certificate")
	}
	// The certificate the request stands on: the one its connection was bound to by
	// an enrollment on it (connbind.go), else the client certificate it presents.
	var c boundCert
	var leaf *x509.Certificate
	if b := boundIdentity(ctx); b != nil {
		c = *b
	} else {
		if len(r.TLS.PeerCertificates) == 0 {
			return nil, refuse(http.StatusUnauthorized, "no client certificate: enroll first (kiln agent enroll)")
		}
		leaf = r.TLS.PeerCertificates[0]
		c = boundCert{machine: leaf.Subject.CommonName, fingerprint: Fingerprint(leaf.Raw),
			serial: hex.EncodeToString(leaf.SerialNumber.Bytes()), notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	}
	var m *resource.Object
	if resource.ValidateName(c.machine) == nil {
		err := s.st.View(ctx, func(tx store.Tx) error {
			var err error
			m, err = tx.Get(ctx, "Machine", c.machine)
			return err
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	// The machine's current certificate is the one Kiln issued last and recorded by
	// its SHA-256: a match proves Kiln issued exactly this certificate, so the chain
	// need not be verified again (the handshake, or the bound CSR, proved the key).
	// What remains is time.
	if m != nil && machineCertStatus(m).CertFingerprint == c.fingerprint {
		if now := s.now(); now.Before(c.notBefore) || now.After(c.notAfter) {
			r := refuse(http.StatusUnauthorized, "client certificate of machine %s is expired or not yet valid (renew, or enroll again)", c.machine)
			r.Machine = c.machine
			return nil, r
		}
		return &AgentIdentity{Machine: c.machine, Fingerprint: c.fingerprint, Serial: c.serial, NotAfter: c.notAfter, Object: m}, nil
	}
	// Refused; say why.
	if leaf != nil {
		if err := s.checkIssued(leaf); err != nil {
			return nil, err
		}
	}
	if m == nil {
		return nil, refuse(http.StatusUnauthorized, "certificate for machine %s: no such machine (deleted?)", truncate(c.machine, 64))
	}
	ref := refuse(http.StatusUnauthorized, "certificate serial %s of machine %s is no longer valid: revoked, or replaced by a renewal or re-enrollment",
		c.serial, c.machine)
	ref.Machine = c.machine
	return nil, ref
}

// checkIssued verifies a client certificate against the CA, to explain a refusal.
func (s *Server) checkIssued(leaf *x509.Certificate) error {
	err := s.ca.verifyClient(leaf, s.now())
	if err == nil {
		return nil
	}
	var reason string
	var ci x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &ua):
		reason = "it was not issued by this Kiln's CA"
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		reason = "it is expired or not yet valid (renew, or enroll again)"
	case errors.As(err, &ci) && ci.Reason == x509.IncompatibleUsage:
		reason = "it is not a client certificate"
	default:
		reason = truncate(err.Error(), 200)
	}
	return refuse(http.StatusUnauthorized, "client certificate %q refused: %s", truncate(leaf.Subject.CommonName, 64), reason)
}

// RefuseOtherMachine answers 403 to a machine that asked for another machine's data
// (workflow, config, secret), with an audit entry and an event on the asking machine.
// Handlers of other packages call it where they find such a request.
func (s *Server) RefuseOtherMachine(w http.ResponseWriter, r *http.Request, target, what string) {
	id, _ := MachineFromContext(r.Context())
	asker := "(unauthenticated)"
	if id != nil {
		asker = id.Machine
	}
	now := s.now()
	summary := fmt.Sprintf("machine %s asked for %s of machine %s (%s %s) from %s: refused", asker, what, target, r.Method, r.URL.Path, remoteAddr(r))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	err := s.st.Update(ctx, func(tx store.Tx) error {
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "machine:" + asker, Action: "access-denied", Kind: "Machine", Name: target, Summary: truncate(summary, 1000)}); err != nil {
			return err
		}
		if id == nil {
			return nil
		}
		return tx.AddEvent(ctx, &store.Event{Machine: asker, Time: now, Type: "AgentForbidden", Message: truncate(summary, 1000)})
	})
	if err != nil {
		s.log().Error("cannot record a refused cross-machine request", "err", err)
	}
	s.log().Warn("agent asked for another machine's data", "machine", asker, "target", target, "what", what)
	writeError(w, http.StatusForbidden, fmt.Sprintf("machine %s may not read %s of machine %s", asker, what, target))
}

// OwnMachineOnly guards a route whose path names a machine ({param}): only that
// machine may call it; any other gets RefuseOtherMachine.
func (s *Server) OwnMachineOnly(param string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := MachineFromContext(r.Context())
		if !ok {
			writeError(w, http.StatusUnauthorized, "a machine certificate is required")
			return
		}
		if target := r.PathValue(param); target != id.Machine {
			s.RefuseOtherMachine(w, r, target, "the record")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// AgentSelf is what GET /agent/v1/self tells a machine about itself.
type AgentSelf struct {
	Machine      string            `json:"machine"`
	Profile      string            `json:"profile,omitempty"`
	State        string            `json:"state,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	CertSerial   string            `json:"certSerial"`
	CertNotAfter time.Time         `json:"certNotAfter"`
}

func (s *Server) handleSelf(w http.ResponseWriter, r *http.Request) {
	id, ok := MachineFromContext(r.Context())
	if !ok {
		writeError(w, http.StatusUnauthorized, "a machine certificate is required")
		return
	}
	out := AgentSelf{Machine: id.Machine, Labels: id.Object.Metadata.Labels, State: machineCertStatus(id.Object).State,
		CertSerial: id.Serial, CertNotAfter: id.NotAfter.UTC()}
	if ms, err := resource.Typed[resource.MachineSpec](id.Object); err == nil {
		out.Profile = ms.Profile
	}
	writeJSON(w, http.StatusOK, out)
}

// RenewRequest is the body of POST /agent/v1/renew.
type RenewRequest = agentwire.RenewRequest

// handleRenew issues a new certificate to a machine presenting its current one. The
// new certificate replaces the old at once (the old one stops authenticating); a
// second renewal with the old certificate is refused.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	id, ok := MachineFromContext(r.Context())
	if !ok {
		writeError(w, http.StatusUnauthorized, "a machine certificate is required")
		return
	}
	remote := remoteAddr(r)
	fail := func(ref *Refusal) {
		ref.Machine = id.Machine
		s.RecordRefusal(r.Context(), "renew", ref, remote.String())
		writeError(w, ref.Status, ref.Reason)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		fail(refuse(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", s.cfg.MaxBodyBytes))
		return
	}
	var req RenewRequest
	if err := strictJSON(body, &req); err != nil {
		fail(refuse(http.StatusBadRequest, "malformed JSON: %v", err))
		return
	}
	csr, err := parseCSR(req.CSR)
	if err != nil {
		fail(refuse(http.StatusBadRequest, "%v", err))
		return
	}
	if err := csr.checkName(id.Machine); err != nil {
		fail(refuse(http.StatusBadRequest, "%v", err))
		return
	}
	now := s.now()
	var resp *EnrollResponse
	err = s.st.Update(r.Context(), func(tx store.Tx) error {
		m, err := tx.Get(r.Context(), "Machine", id.Machine)
		if err != nil {
			return err
		}
		if machineCertStatus(m).CertFingerprint != id.Fingerprint {
			return refuse(http.StatusConflict, "certificate serial %s was renewed or revoked meanwhile", id.Serial)
		}
		cert, err := s.ca.issueClient(id.Machine, csr.pub, now, s.cfg.CertTTL)
		if err != nil {
			return err
		}
		fp, serial := cert.fingerprint, cert.serial
		if m.Status, err = mergeStatus(m.Status, map[string]any{"certFingerprint": fp, "certSerial": serial, "certNotAfter": cert.notAfter, "lastSeen": now}); err != nil {
			return err
		}
		if err := tx.Update(r.Context(), m); err != nil {
			return err
		}
		summary := fmt.Sprintf("certificate renewed from %s: serial %s replaces %s, %s, expires %s", remote, serial, id.Serial, csr.keyDesc, cert.notAfter.Format(time.RFC3339))
		if err := tx.AppendAudit(r.Context(), &audit.Entry{Time: now, Actor: "machine:" + id.Machine, Action: "renew", Kind: "Machine", Name: id.Machine, Summary: summary}); err != nil {
			return err
		}
		if err := tx.AddEvent(r.Context(), &store.Event{Machine: id.Machine, Time: now, Type: "CertificateRenewed", Message: summary}); err != nil {
			return err
		}
		resp = s.response(cert, now)
		return nil
	})
	if err != nil {
		var ref *Refusal
		if errors.As(err, &ref) {
			fail(ref)
			return
		}
		s.log().Error("renew", "machine", id.Machine, "err", err)
		writeError(w, http.StatusServiceUnavailable, "renewal failed on the server; retry later")
		return
	}
	s.log().Info("certificate renewed", "machine", id.Machine, "serial", resp.Serial)
	writeJSON(w, http.StatusOK, resp)
}

// ---- revocation and the CRL ------------------------------------------------

// revocationSpec is a revoked certificate, kept until it expires.
type revocationSpec struct {
	Serial      string    `json:"serial"`
	Machine     string    `json:"machine"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	RevokedAt   time.Time `json:"revokedAt"`
	NotAfter    time.Time `json:"notAfter"`
	Boot        bool      `json:"boot,omitempty"`
}

// RevokeResult says what RevokeMachine revoked.
type RevokeResult struct {
	Machine string   `json:"machine"`
	Serials []string `json:"serials"`
}

// RevokeMachine revokes a machine's certificate (and its exported boot certificates):
// the agent API refuses it from the next request on, and it is listed in the CRL
// until it expires. The machine can enroll again with a new token.
func (s *Server) RevokeMachine(ctx context.Context, actor, name string) (*RevokeResult, error) {
	now := s.now()
	res := &RevokeResult{Machine: name, Serials: []string{}}
	err := s.st.Update(ctx, func(tx store.Tx) error {
		res.Serials = res.Serials[:0]
		m, err := tx.Get(ctx, "Machine", name)
		if err != nil {
			return fmt.Errorf("revoke machine %q: %w", name, err)
		}
		cs := machineCertStatus(m)
		record := func(rs revocationSpec) error {
			raw, _ := json.Marshal(rs)
			err := tx.Create(ctx, &resource.Object{Kind: revocationKind, Metadata: resource.Metadata{Name: rs.Serial}, Spec: raw})
			if err != nil && !errors.Is(err, store.ErrExists) {
				return err
			}
			res.Serials = append(res.Serials, rs.Serial)
			return nil
		}
		if cs.CertSerial != "" {
			na := now.Add(s.cfg.CertTTL)
			if cs.CertNotAfter != nil {
				na = *cs.CertNotAfter
			}
			if err := record(revocationSpec{Serial: cs.CertSerial, Machine: name, Fingerprint: cs.CertFingerprint, RevokedAt: now, NotAfter: na}); err != nil {
				return err
			}
		}
		if cs.CertFingerprint != "" || cs.CertSerial != "" {
			if m.Status, err = mergeStatus(m.Status, map[string]any{"certFingerprint": nil, "certSerial": nil, "certNotAfter": nil, "certRevokedAt": now}); err != nil {
				return err
			}
			if err := tx.Update(ctx, m); err != nil {
				return err
			}
		}
		bootCerts, err := listAll(ctx, tx, bootCertKind)
		if err != nil {
			return err
		}
		for _, bc := range bootCerts {
			var b bootCertSpec
			if json.Unmarshal(bc.Spec, &b) != nil || b.Machine != name || b.Revoked {
				continue
			}
			b.Revoked = true
			bc.Spec, _ = json.Marshal(b)
			if err := tx.Update(ctx, bc); err != nil {
				return err
			}
			if err := record(revocationSpec{Serial: b.Serial, Machine: name, Fingerprint: bc.Metadata.Name, RevokedAt: now, NotAfter: b.NotAfter, Boot: true}); err != nil {
				return err
			}
		}
		if len(res.Serials) == 0 {
			return &InvalidError{Err: fmt.Errorf("machine %s has no certificate to revoke", name)}
		}
		summary := fmt.Sprintf("certificates revoked: serial %v", res.Serials)
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: actor, Action: "revoke-cert", Kind: "Machine", Name: name, Summary: summary}); err != nil {
			return err
		}
		return tx.AddEvent(ctx, &store.Event{Machine: name, Time: now, Type: "CertificateRevoked", Message: summary + " by " + actor})
	})
	if err != nil {
		return nil, err
	}
	s.crlMu.Lock()
	s.crlDER = nil // the next GET /crl lists it
	s.crlMu.Unlock()
	s.log().Info("certificates revoked", "machine", name, "serials", res.Serials, "actor", actor)
	return res, nil
}

func listAll(ctx context.Context, tx store.Tx, kind string) ([]*resource.Object, error) {
	var out []*resource.Object
	after := ""
	for {
		objs, next, err := tx.List(ctx, kind, store.ListOptions{Limit: 1000, Continue: after})
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
		if next == "" {
			return out, nil
		}
		after = next
	}
}

// crlRefresh is how long a served CRL is reused; a revocation on this replica resets it.
const crlRefresh = time.Minute

// CRL returns the DER certificate revocation list: every revoked certificate that has
// not expired yet, signed by the CA, valid for a day.
func (s *Server) CRL(ctx context.Context) ([]byte, error) {
	now := s.now()
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	if s.crlDER != nil && now.Before(s.crlExpire) {
		return s.crlDER, nil
	}
	var objs []*resource.Object
	err := s.st.View(ctx, func(tx store.Tx) error {
		var err error
		objs, err = listAll(ctx, tx, revocationKind)
		return err
	})
	if err != nil {
		return nil, err
	}
	var entries []x509.RevocationListEntry
	for _, o := range objs {
		var rs revocationSpec
		if json.Unmarshal(o.Spec, &rs) != nil || now.After(rs.NotAfter) {
			continue
		}
		b, err := hex.DecodeString(rs.Serial)
		if err != nil {
			continue
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: new(big.Int).SetBytes(b), RevocationTime: rs.RevokedAt})
	}
	der, err := s.ca.crl(entries, now, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	s.crlDER, s.crlExpire = der, now.Add(crlRefresh)
	return der, nil
}

func (s *Server) handleCRL(w http.ResponseWriter, r *http.Request) {
	der, err := s.CRL(r.Context())
	if err != nil {
		s.log().Error("crl", "err", err)
		writeError(w, http.StatusServiceUnavailable, "cannot produce the CRL: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", "max-age=60")
	http.ServeContent(w, r, "kiln.crl", time.Time{}, bytes.NewReader(der))
}
