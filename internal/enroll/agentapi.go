package enroll

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// The agent API's own endpoints: who am I (GET /agent/v1/self) and renewal.

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
	// A TPM-enrolled machine re-quotes (tpm.go): its answer is verified here, before
	// the transaction, which uses the challenge up once.
	rq := &renewQuote{owner: "renew:" + id.Machine + ":" + csr.keyHash}
	if req.TPMAnswer != nil {
		res, err := s.tpmChallenges.Verify(req.TPMAnswer.ChallengeID, rq.owner, attestAnswer(req.TPMAnswer))
		rq.result, rq.err = &res, err
	}
	err = s.st.Update(r.Context(), func(tx store.Tx) error {
		m, err := tx.Get(r.Context(), "Machine", id.Machine)
		if err != nil {
			return err
		}
		if machineCertStatus(m).CertFingerprint != id.Fingerprint {
			return refuse(http.StatusConflict, "certificate serial %s was renewed or revoked meanwhile", id.Serial)
		}
		set := map[string]any{}
		if err := s.renewTPMGate(r.Context(), tx, m, now, rq, set); err != nil || rq.challenge != nil {
			return err
		}
		cert, err := s.ca.issueClient(id.Machine, csr.pub, now, s.cfg.CertTTL)
		if err != nil {
			return err
		}
		fp, serial := cert.fingerprint, cert.serial
		set["certFingerprint"], set["certSerial"], set["certNotAfter"], set["lastSeen"] = fp, serial, cert.notAfter, now
		if m.Status, err = mergeStatus(m.Status, set); err != nil {
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
	if err != nil && rq.failed != nil {
		s.recordAttestationFailure(r.Context(), id.Machine, rq.failed)
	}
	if err == nil && rq.challenge != nil {
		writeJSON(w, http.StatusAccepted, rq.challenge)
		return
	}
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
