package enroll

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Revocation of machine certificates and the CRL.

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
