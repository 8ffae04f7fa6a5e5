package enroll

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

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
