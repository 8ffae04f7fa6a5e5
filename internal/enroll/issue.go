package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Issuing: the CSR's names, the replay record, the certificate and the writes of an
// enrollment.

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
	if e.tpmStatus != nil {
		set["tpm"] = e.tpmStatus
		via += fmt.Sprintf(", TPM EK %s attested (measured boot: %s)", e.tpmStatus.EKSHA256[:16], e.tpmStatus.Attestation)
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
