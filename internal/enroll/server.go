package enroll

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/atomicfile"
	"github.com/kilnhq/kiln/internal/attest"
	"github.com/kilnhq/kiln/internal/auditagg"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Defaults.
const (
	DefaultCertTTL       = 24 * time.Hour
	DefaultServerCertTTL = 30 * 24 * time.Hour
	DefaultBootTokenTTL  = 10 * time.Minute
	DefaultBootCertTTL   = 365 * 24 * time.Hour
	DefaultMaxBodyBytes  = 1 << 20
	DefaultReplayWindow  = 30 * 24 * time.Hour
	// KEKFileName is the key-encryption key's file in the data dir when none is given.
	KEKFileName = "kek.key"
	// CACertFileName is the public copy of the CA certificate written to the data dir.
	CACertFileName = "ca.crt"
)

// Config is what `kiln serve` tells the enrollment service.
type Config struct {
	// DataDir receives kek.key (when no KEK is given and none exists yet) and a public
	// copy of the CA certificate, ca.crt.
	DataDir string
	// KEK is the key-encryption key itself (from KILN_KEK); KEKFile a file holding it
	// (default <DataDir>/kek.key, created with mode 0600 on first start).
	KEK     []byte
	KEKFile string
	// OtherKEKs are previous or next keys of a key rotation (kek.key.old, .new): the
	// CA is opened with whichever it is sealed under and re-sealed under KEK.
	OtherKEKs [][]byte
	// ImportCACert and ImportCAKey are PEM files of an operator's intermediate CA (the
	// certificate file may continue with the issuers' certificates). They are used on
	// first start only; later starts check they name the CA in use.
	ImportCACert, ImportCAKey string
	// PublicURL is the HTTPS base URL agents reach Kiln at (https://10.0.0.2:8443). It
	// is written into tokens (iss) and onto the agent's kernel command line, and its
	// host is added to the server certificate's SANs.
	PublicURL string
	// ServerSANs are the DNS names and IP addresses of the server certificate; empty:
	// DefaultServerSANs().
	ServerSANs []string
	// ServerRSA also serves an RSA-2048 certificate, for TLS clients without ECDSA.
	ServerRSA bool
	// BootCA opens (on first start: creates) the RSA boot CA, and the HTTPS listener
	// answers boot clients (iPXE, UEFI HTTPS boot) with an RSA chain up to it
	// (bootca.go explains why a second root).
	BootCA bool
	// CertTTL is the lifetime of machine certificates (default 24h); agents renew at 2/3.
	CertTTL       time.Duration
	ServerCertTTL time.Duration
	// BootTokenTTL is the lifetime of per-boot join tokens (default 10m): the boot
	// window within which the machine fetches its script and enrolls.
	BootTokenTTL time.Duration
	// BootTokensForNew also mints per-boot tokens for machines in state new (not only
	// for machines an operator reprovisioned). Off by default: every machine just
	// added is new, and its token would be there for whoever holds its leased address.
	BootTokensForNew bool
	// BootCertTTL is the lifetime of exported iPXE client certificates (default 1 year).
	BootCertTTL time.Duration
	// MaxBodyBytes bounds enrollment and renewal requests (default 1 MiB).
	MaxBodyBytes int64
	// RegisterByMAC lets a machine in state provisioning enroll with no token, on its
	// MAC alone. Off by default: a MAC is self-reported.
	RegisterByMAC bool
	// ApprovalWithoutToken lets a host with no token ask to be enrolled and wait for
	// an operator's approval (approval.go). Off by default.
	ApprovalWithoutToken bool
	// ApprovalTTL is how long an enrollment request waits for a decision (default 24h).
	ApprovalTTL time.Duration
	// MaxPendingEnrollments and MaxPendingPerSource cap the requests that wait, in
	// all and per source address (default 1,000 and 5).
	MaxPendingEnrollments, MaxPendingPerSource int
	// ReplayWindow is how long an enrolled public key is remembered to refuse replays.
	ReplayWindow time.Duration
	// PolicyCostLimit and PolicyTimeout bound each CEL evaluation.
	PolicyCostLimit uint64
	PolicyTimeout   time.Duration
	// TPMEKRoots is a folder of TPM vendor certificates (PEM): with it, a TPM
	// enrollment's EK certificate must chain to one of them. Empty: EKs are
	// trusted only through their pin.
	TPMEKRoots string
	// TPMChallengeTTL is how long a TPM challenge may be answered (default
	// attest.DefaultChallengeTTL).
	TPMChallengeTTL time.Duration
}

// MachineScripter renders a known machine's iPXE script; the boot server implements it.
type MachineScripter interface {
	ScriptForMachine(ctx context.Context, r *http.Request, m *resource.Object) (string, error)
}

// Server is the enrollment service: CA, join tokens, POST /enroll, the agent API's
// authentication, revocation and the CRL.
type Server struct {
	// Logger, optional.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ActorOf names the operator behind an operator API request, for audit entries.
	ActorOf func(*http.Request) string
	// RoleOf is the role of the operator behind an operator API request (join tokens
	// that lead to secrets are admin-only); nil counts everyone as an operator.
	RoleOf func(*http.Request) string
	// Scripts, if set, enables boot by client certificate (GET /ipxe/by-cert).
	Scripts MachineScripter
	// BootApplications, if set, returns the EFI applications Kiln serves a
	// profile's machines (its kernel, its UKI) by Authenticode SHA-256, each
	// described ("kernel NAME"). A TPM quote whose last boot application (PCR 4) is
	// none of them did not boot what Kiln served: the profile's attestation policy
	// applies, before any baseline is learned or compared. It must not write to the
	// store (it runs inside the enrollment's transaction).
	BootApplications func(ctx context.Context, tx store.Tx, ps *resource.ProfileSpec) (map[string]string, error)
	// OnEnroll, if set, is called after each enrollment with "issued" or the refusal's
	// HTTP status class ("refused-401" ...) and the time it took: for metrics.
	OnEnroll func(outcome string, d time.Duration)
	// RefusalInterval is how long repeats of one refusal (same action, source and
	// reason) are counted before one audit entry records them; 0:
	// auditagg.DefaultInterval.
	RefusalInterval time.Duration

	cfg    Config
	st     store.Store
	ca     *authority
	certs  *serverCerts
	policy *policyEngine

	// bootCA and bootCerts are nil unless Config.BootCA.
	bootCA    *authority
	bootCerts *serverCerts

	// verified caches token signatures (see claimsCache).
	verified claimsCache
	batches  batcher
	// bootAlerts aggregates alerts for script requests from the wrong address.
	bootAlerts bootAlerts
	// refusals aggregates refusals into audit entries (see refusalAggregator).
	refusals     auditagg.Aggregator
	refusalsOnce sync.Once
	// profiles caches profiles' enrollPolicy (see profilePolicy).
	profiles sync.Map
	// tpmChallenges are the TPM challenges waiting for an answer; ekRoots the TPM
	// vendor roots, nil without Config.TPMEKRoots (tpm.go).
	tpmChallenges *attest.Challenges
	ekRoots       *attest.EKRoots

	crlMu     sync.Mutex
	crlDER    []byte
	crlExpire time.Time
}

// New opens (on first start: creates or imports) the CA and the token signing key from
// the store and issues the server certificate.
func New(ctx context.Context, st store.Store, cfg Config) (*Server, error) {
	if cfg.CertTTL <= 0 {
		cfg.CertTTL = DefaultCertTTL
	}
	if cfg.ServerCertTTL <= 0 {
		cfg.ServerCertTTL = DefaultServerCertTTL
	}
	if cfg.BootTokenTTL <= 0 {
		cfg.BootTokenTTL = DefaultBootTokenTTL
	}
	if cfg.BootCertTTL <= 0 {
		cfg.BootCertTTL = DefaultBootCertTTL
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ReplayWindow <= 0 {
		cfg.ReplayWindow = DefaultReplayWindow
	}
	s := &Server{cfg: cfg, st: st}
	now := s.now()
	s.tpmChallenges = attest.NewChallenges(cfg.TPMChallengeTTL, 0, s.now)
	if cfg.TPMEKRoots != "" {
		roots, err := attest.LoadEKRoots(cfg.TPMEKRoots)
		if err != nil {
			return nil, err
		}
		s.ekRoots = roots
	}

	var imp *importedCA
	if cfg.ImportCACert != "" || cfg.ImportCAKey != "" {
		if cfg.ImportCACert == "" || cfg.ImportCAKey == "" {
			return nil, errors.New("import CA: give both the certificate and the key file")
		}
		cp, err := os.ReadFile(cfg.ImportCACert)
		if err != nil {
			return nil, fmt.Errorf("import CA: %w", err)
		}
		kp, err := os.ReadFile(cfg.ImportCAKey)
		if err != nil {
			return nil, fmt.Errorf("import CA: %w", err)
		}
		if imp, err = parseImport(cp, kp, now); err != nil {
			return nil, fmt.Errorf("import CA: %w", err)
		}
	}
	kek := cfg.KEK
	if kek == nil {
		path := cfg.KEKFile
		if path == "" {
			if cfg.DataDir == "" {
				return nil, errors.New("enroll: no key-encryption key: set a KEK, a KEK file or a data dir")
			}
			path = filepath.Join(cfg.DataDir, KEKFileName)
		}
		exists, err := authorityExists(ctx, st)
		if err != nil {
			return nil, err
		}
		// A new key only for a new CA: if the store has a CA, a missing key file is a
		// configuration error, not a reason to make another key.
		if kek, err = LoadKEK(path, !exists); err != nil {
			return nil, err
		}
	}
	sl, err := newSealer(kek)
	if err != nil {
		return nil, err
	}
	var others []*sealer
	for _, k := range cfg.OtherKEKs {
		o, err := newSealer(k)
		if err != nil {
			return nil, fmt.Errorf("other key-encryption key: %w", err)
		}
		others = append(others, o)
	}
	if s.ca, err = openAuthority(ctx, st, sl, others, imp, now); err != nil {
		return nil, err
	}
	sans := cfg.ServerSANs
	if len(sans) == 0 {
		sans = DefaultServerSANs()
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" {
			return nil, fmt.Errorf("public URL %q: not an https:// URL", cfg.PublicURL)
		}
		sans = append(append([]string(nil), sans...), u.Hostname())
	}
	if s.certs, err = newServerCerts(s.ca, dedupe(sans), cfg.ServerCertTTL, cfg.ServerRSA, s.now); err != nil {
		return nil, err
	}
	if cfg.BootCA {
		if s.bootCA, err = openBootAuthority(ctx, st, sl, others, now); err != nil {
			return nil, err
		}
		if s.bootCerts, err = newBootServerCerts(s.bootCA, s.certs); err != nil {
			return nil, err
		}
	}
	if s.policy, err = newPolicyEngine(cfg.PolicyCostLimit, cfg.PolicyTimeout); err != nil {
		return nil, err
	}
	if cfg.DataDir != "" {
		if err := writeFileAtomic(filepath.Join(cfg.DataDir, CACertFileName), s.ca.chainPEM, 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", CACertFileName, err)
		}
	}
	return s, nil
}

func authorityExists(ctx context.Context, st store.Store) (bool, error) {
	err := st.View(ctx, func(tx store.Tx) error {
		_, err := tx.Get(ctx, authorityKind, authorityName)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("certificate authority: %w", err)
	}
	return true, nil
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// CAFingerprint is the SHA-256 of the CA certificate (hex): what agents pin.
func (s *Server) CAFingerprint() string { return s.ca.fingerprint }

// CACertificatePEM is the CA certificate, followed by its issuers for an imported CA.
func (s *Server) CACertificatePEM() []byte { return append([]byte(nil), s.ca.chainPEM...) }

// CACertPool holds the CA, for clients (tests, tools) that verify the server.
func (s *Server) CACertPool() *x509.CertPool { return s.ca.pool.Clone() }

// TLSConfig is the configuration of Kiln's HTTPS listener: the server certificate from
// the CA, renewed in place, and client certificates requested but not required, so
// that one port serves enrollment (no client certificate yet) and the agent API
// (mTLS). Client certificates are verified by AgentAuth and the boot-by-certificate
// handler, not by the handshake: a certificate from another CA then gets an HTTP 401
// that says so, and an audit entry, instead of an anonymous TLS alert.
func (s *Server) TLSConfig() *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.certs.get,
		ClientAuth:     tls.RequestClientCert,
		ClientCAs:      s.ca.pool, // sent as the acceptable-CA hint
		NextProtos:     []string{"h2", "http/1.1"},
		// No resumption: none of this port's clients resumes (an agent enrolls once
		// per boot and keeps its connection; iPXE and curl make one-off requests), and
		// every TLS 1.3 session ticket would cost both ends a record and the server an
		// encryption, ~3 % of an enrollment (BENCHMARKS.md).
		SessionTicketsDisabled: true,
	}
	if s.bootCerts != nil {
		boot := s.bootTLSConfig(c)
		c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if isBootClient(hello) {
				return boot, nil
			}
			return nil, nil
		}
	}
	return c
}

// Register adds the unauthenticated enrollment routes: POST /enroll (HTTPS only),
// GET /ca.crt, GET /crl, and, with Scripts set, GET /ipxe/by-cert.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+agentwire.EnrollPath, s.handleEnroll)
	mux.HandleFunc("POST "+agentwire.EnrollRequestPattern, s.handlePoll)
	mux.HandleFunc("GET "+agentwire.CACertPath, s.handleCACert)
	mux.HandleFunc("GET "+agentwire.CRLPath, s.handleCRL)
	if s.Scripts != nil {
		mux.Handle("GET /ipxe/by-cert", s.BootByCert(s.Scripts))
	}
}

// RegisterAgent adds the agent API routes this package owns, behind AgentAuth:
// POST /agent/v1/renew and GET /agent/v1/self.
func (s *Server) RegisterAgent(mux *http.ServeMux) {
	mux.Handle("POST "+agentwire.RenewPath, s.AgentAuth(http.HandlerFunc(s.handleRenew)))
	mux.Handle("GET "+agentwire.SelfPath, s.AgentAuth(http.HandlerFunc(s.handleSelf)))
}

func (s *Server) handleCACert(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("X-Kiln-CA-Fingerprint", "sha256:"+s.ca.fingerprint)
	w.Write(s.ca.chainPEM)
}

// CAInfo describes the CA for `kiln ca show`.
type CAInfo struct {
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
	Imported    bool      `json:"imported"`
	Certificate string    `json:"certificate"`
	// Boot is the RSA boot CA, which firmware and iPXE trust for HTTPS boot; nil when
	// this server has none.
	Boot *BootCAInfo `json:"boot,omitempty"`
}

// CA describes the CA.
func (s *Server) CA() CAInfo {
	c := s.ca.cert
	return CAInfo{Fingerprint: s.ca.fingerprint, Subject: c.Subject.String(), Issuer: c.Issuer.String(),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), Imported: s.ca.imported, Certificate: string(s.ca.chainPEM), Boot: s.BootCA()}
}

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, mode)
}
