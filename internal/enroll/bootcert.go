package enroll

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Boot by client certificate (the valve-infra model): an iPXE build can embed a client
// certificate and key (make ... CERT=client.crt PRIVKEY=client.key, TRUST=ca.crt) and
// fetch its script over HTTPS from GET /ipxe/by-cert. Kiln picks the machine by the
// certificate's fingerprint, so the script, which may carry a per-boot token, only goes
// to that machine. The key is generated here because it has to be built into the
// machine's iPXE image; it is handed to the operator once and never stored.

// bootCertSpec is an exported boot certificate (object name: its fingerprint).
type bootCertSpec struct {
	Machine  string    `json:"machine"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"notAfter"`
	Revoked  bool      `json:"revoked,omitempty"`
}

// BootCertRequest asks for a boot certificate (POST /api/v1/enroll/machines/{name}/bootcert).
type BootCertRequest struct {
	// KeyType is "rsa" (RSA-2048, what every iPXE build supports; the default) or "ecdsa".
	KeyType string `json:"keyType,omitempty"`
	// TTL: a Go duration; default one year.
	TTL string `json:"ttl,omitempty"`
}

// BootCert is an exported boot certificate with its private key: shown this once.
type BootCert struct {
	Machine     string    `json:"machine"`
	Certificate string    `json:"certificate"`
	Key         string    `json:"key"`
	CA          string    `json:"ca"`
	Fingerprint string    `json:"fingerprint"`
	Serial      string    `json:"serial"`
	NotAfter    time.Time `json:"notAfter"`
}

// ExportBootCert issues a client certificate and key for a machine's iPXE build.
func (s *Server) ExportBootCert(ctx context.Context, actor, name string, req BootCertRequest) (*BootCert, error) {
	ttl := s.cfg.BootCertTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 10*365*24*time.Hour {
			return nil, invalid("ttl: %q is not a positive duration of at most ten years (87600h)", req.TTL)
		}
		ttl = d
	}
	var key crypto.Signer
	var err error
	switch req.KeyType {
	case "", "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, invalid("keyType: %q is not rsa or ecdsa", req.KeyType)
	}
	if err != nil {
		return nil, err
	}
	now := s.now()
	var out *BootCert
	err = s.st.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(ctx, "Machine", name); err != nil {
			return fmt.Errorf("machine %q: %w", name, err)
		}
		cert, err := s.ca.issueClient(name, key.Public(), now, ttl)
		if err != nil {
			return err
		}
		fp, serial := cert.fingerprint, cert.serial
		raw, _ := json.Marshal(bootCertSpec{Machine: name, Serial: serial, NotAfter: cert.notAfter})
		if err := tx.Create(ctx, &resource.Object{Kind: bootCertKind, Metadata: resource.Metadata{Name: fp}, Spec: raw}); err != nil {
			return err
		}
		summary := fmt.Sprintf("boot client certificate exported: serial %s, fingerprint %s, expires %s", serial, fp[:16], cert.notAfter.Format(time.RFC3339))
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: actor, Action: "export-boot-cert", Kind: "Machine", Name: name, Summary: summary}); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, &store.Event{Machine: name, Time: now, Type: "BootCertExported", Message: summary + " by " + actor}); err != nil {
			return err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		out = &BootCert{Machine: name, Certificate: certPEM(cert.der), Key: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})),
			CA: string(s.ca.chainPEM), Fingerprint: fp, Serial: serial, NotAfter: cert.notAfter}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// BootByCert serves a machine's iPXE script to the holder of its boot certificate.
// Failures answer with an iPXE script that says why (iPXE shows it) and a 4xx status.
func (s *Server) BootByCert(scripts MachineScripter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(ref *Refusal) {
			s.RecordRefusal(r.Context(), "boot-by-cert", ref, remoteAddr(r).String())
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(ref.Status)
			fmt.Fprintf(w, "#!ipxe\necho Kiln refused this boot: %s\nsleep 30\nreboot\n", ipxeSafe(ref.Reason))
		}
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			fail(refuse(http.StatusUnauthorized, "boot by certificate needs HTTPS with the machine's boot client certificate"))
			return
		}
		leaf := r.TLS.PeerCertificates[0]
		fp := Fingerprint(leaf.Raw)
		var b bootCertSpec
		var m *resource.Object
		err := s.st.View(r.Context(), func(tx store.Tx) error {
			bc, err := tx.Get(r.Context(), bootCertKind, fp)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(bc.Spec, &b); err != nil {
				return err
			}
			m, err = tx.Get(r.Context(), "Machine", b.Machine)
			return err
		})
		if errors.Is(err, store.ErrNotFound) {
			// Only certificates Kiln exported are recorded; say what this one is.
			if err := s.checkIssued(leaf); err != nil {
				var ref *Refusal
				errors.As(err, &ref)
				fail(ref)
				return
			}
			fail(refuse(http.StatusForbidden, "certificate %s is not a boot certificate of any machine", fp[:16]))
			return
		}
		if err != nil {
			s.log().Error("boot by certificate", "err", err)
			http.Error(w, "inventory unavailable", http.StatusServiceUnavailable)
			return
		}
		if now := s.now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			ref := refuse(http.StatusForbidden, "boot certificate serial %s of machine %s is expired", b.Serial, b.Machine)
			ref.Machine = b.Machine
			fail(ref)
			return
		}
		if b.Revoked {
			ref := refuse(http.StatusForbidden, "boot certificate serial %s of machine %s is revoked", b.Serial, b.Machine)
			ref.Machine = b.Machine
			fail(ref)
			return
		}
		script, err := scripts.ScriptForMachine(r.Context(), r, m)
		if err != nil {
			ref := refuse(http.StatusServiceUnavailable, "no boot script for machine %s: %v", b.Machine, err)
			ref.Machine = b.Machine
			fail(ref)
			return
		}
		s.log().Info("boot script by client certificate", "machine", b.Machine, "remote", remoteAddr(r))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte(script))
	})
}

// ipxeSafe keeps a message printable by iPXE's echo.
func ipxeSafe(s string) string {
	out := make([]rune, 0, len(s))
	for _, c := range s {
		switch c {
		case '\n', '\r':
			c = ' '
		case '$', '#':
			continue
		}
		out = append(out, c)
		if len(out) >= 200 {
			break
		}
	}
	return string(out)
}
