// Package server assembles Kiln's services from a Config and runs them until the
// context ends: the store, the operator API, health and metrics endpoints.
package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/apitoken"
	"github.com/kilnhq/kiln/internal/atomicfile"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/datadir"
	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/enroll"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/minisign"
	"github.com/kilnhq/kiln/internal/ratelimit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/sdnotify"
	"github.com/kilnhq/kiln/internal/secrets"
	"github.com/kilnhq/kiln/internal/sso"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/open"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
	"github.com/kilnhq/kiln/internal/workflow"
)

// Files kept in the data directory for the CLI on the same host.
const (
	AdminTokenFile = "admin.token"
	ServerURLFile  = "server.url"
)

// Config is everything `kiln serve` can be told.
type Config struct {
	DataDir  string
	Database string
	// Listen is the plain-HTTP listener: boot endpoints, and the operator API
	// too unless APIListen is set.
	Listen string
	// APIListen, when set, is the operator API's own listener (HTTPS with the
	// server certificate unless APIPlaintext): the API then leaves Listen and
	// HTTPSListen, which serve only boot, enrollment and agent paths, so an API
	// token never crosses the provisioning network in cleartext.
	APIListen string
	// APIPlaintext serves APIListen over plain HTTP (behind a TLS-terminating
	// proxy on the same host).
	APIPlaintext    bool
	MaxBodyBytes    int64
	ShutdownTimeout time.Duration
	Version         string
	// ArtifactDir holds local artifact files; default <data-dir>/artifacts.
	ArtifactDir string
	// ArtifactAllow is the allow-list of remote artifact sources (boot.SourcePolicy):
	// "public", addresses, CIDR prefixes, host names; empty: public addresses only.
	ArtifactAllow []string
	// WebhookAllow is the allow-list of addresses webhooks may call, as
	// ArtifactAllow's; empty: public addresses only.
	WebhookAllow []string
	// ArtifactMaxBytes bounds a remote artifact without a declared spec.size; 0:
	// boot.DefaultMaxRemoteBytes.
	ArtifactMaxBytes int64
	// ArtifactKeys are minisign public key files (.pub): when set, every artifact
	// must carry a spec.signature by one of them to be served.
	ArtifactKeys []string
	// UKIAgentDeadline is how long after a machine downloaded its UKI its agent
	// must show before an AgentMissing event; 0: boot.DefaultAgentDeadline.
	UKIAgentDeadline time.Duration
	// DiscoveryProfile is booted by unknown machines where no subnet says otherwise.
	DiscoveryProfile string
	// AgentKernel and AgentInitrd name the artifacts profiles with boot.agent boot.
	AgentKernel, AgentInitrd string
	// FailedBootsAgent: machines whose provisioning failed boot their profile again.
	FailedBootsAgent bool
	// TFTPListen is the TFTP listen address; empty disables TFTP.
	TFTPListen string
	// TFTPMaxTransfers and TFTPMaxTransfersPerAddress cap concurrent TFTP
	// transfers; TFTPFirstACKTimeout caps the wait for a client's first ACK
	// (0: the tftp package's defaults).
	TFTPMaxTransfers, TFTPMaxTransfersPerAddress int
	TFTPFirstACKTimeout                          time.Duration
	// IPXEDirs hold the iPXE binaries served over TFTP and HTTP(S), searched in
	// order for each file (Debian 13's first, Debian 12's as the fallback).
	IPXEDirs []string
	// DHCPInterfaces are the interfaces DHCP serves; none disables DHCP.
	DHCPInterfaces []string
	// PublicURL is the base URL machines reach Kiln's HTTP at; empty: derived from the
	// subnet's boot server address and the listen port.
	PublicURL string
	// KEKFile is the key-encryption key; default <data-dir>/kek.key.
	KEKFile string
	// SecretMaxBytes bounds a secret value; SecretHandleTTL is a handle's lifetime.
	SecretMaxBytes  int64
	SecretHandleTTL time.Duration

	// HTTPSListen is the TLS listener (enrollment, the agent API over mTLS, and
	// the API and boot endpoints again); empty disables it.
	HTTPSListen string
	// EnrollURL is the https base URL agents enroll at; default derived from
	// PublicURL's host and the HTTPS port.
	EnrollURL string
	// ServerSANs name the server certificate's DNS names and addresses.
	ServerSANs []string
	// CertTTL is machine certificates' lifetime; BootTokenTTL per-boot join tokens'.
	CertTTL, BootTokenTTL time.Duration
	// CAImportCert and CAImportKey import an operator's intermediate CA at first start.
	CAImportCert, CAImportKey string
	// EnrollByMAC lets machines in state provisioning enroll on their MAC alone.
	EnrollByMAC bool
	// EnrollApprovalWithoutToken lets a host without a token ask to be enrolled and
	// wait for an operator's approval; EnrollApprovalTTL is how long a request waits.
	EnrollApprovalWithoutToken bool
	EnrollApprovalTTL          time.Duration
	// BootTokensForNew mints per-boot tokens for machines in state new too, not only
	// for machines an operator reprovisioned (README, #threat-model).
	BootTokensForNew bool
	// TPMEKRoots is a folder of TPM vendor root and intermediate certificates (PEM):
	// TPM enrollments' EK certificates must chain to one of them. Empty: EKs are
	// trusted through their pin only.
	TPMEKRoots string
	// ServerRSA also serves an RSA certificate, for TLS clients without ECDSA.
	ServerRSA bool
	// BootHTTPS is which boot clients DHCP sends to the HTTPS listener: "never"
	// (default), "efi" or "always" (dhcp.HTTPSPolicy). Anything but never needs the
	// boot CA, which BootCA also creates on its own (to export it into firmware
	// before machines are sent to HTTPS).
	BootHTTPS string
	BootCA    bool
	// Systemd is told READY=1 once every listener serves, STOPPING=1 at shutdown,
	// and pinged for WatchdogSec= while the store answers; nil outside systemd.
	Systemd *sdnotify.Notifier
	// RateLimits override DefaultRateLimits by endpoint class (a zero Rate: no
	// limit); RateLimitSources caps the source addresses remembered per class (0:
	// ratelimit.DefaultMaxSources).
	RateLimits       map[string]ratelimit.Rate
	RateLimitSources int
	// EventRetention removes events older than it, EventRetentionCount all but a
	// machine's newest that many (0: no limit of that kind); AuditRetention removes
	// audit entries older than it behind a retention checkpoint (0: keep all).
	EventRetention      time.Duration
	EventRetentionCount int
	AuditRetention      time.Duration
	// OIDC signs people in to the web console (/ui/) through the company's
	// identity provider; zero: the console signs in with an API token only.
	OIDC sso.Config
	// ChangeRetentionCount is how many object writes the change log keeps for
	// watches to resume over (0: DefaultChangeRetentionCount).
	ChangeRetentionCount int64
	// WatchesPerCaller bounds the watches one API token holds open (0:
	// api.DefaultWatchesPerCaller); WatchPoll is how often the watches read the
	// store for other replicas' writes (0: watch.DefaultPoll).
	WatchesPerCaller int
	WatchPoll        time.Duration
}

// artifactDir is where local artifact files are: ArtifactDir, else
// <data-dir>/artifacts.
func (c Config) artifactDir() string {
	return cmp.Or(c.ArtifactDir, filepath.Join(c.DataDir, "artifacts"))
}

// closeListeners closes what New bound, when it fails after binding.
func (s *Server) closeListeners() {
	s.listener.Close()
	if s.apiLn != nil {
		s.apiLn.Close()
	}
	if s.tlsLn != nil {
		s.tlsLn.Close()
	}
}

// Server is a running Kiln.
type Server struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	registry *prometheus.Registry
	http     *http.Server
	listener net.Listener
	// udpServers run beside HTTP until the context ends (TFTP, DHCP).
	udpServers []func(context.Context) error
	secrets    *secrets.Service
	power      *powerService
	enroll     *enroll.Server
	auditChain *audit.Chain
	// operatorAPI is the operator API as mounted (its route table is what tests walk).
	operatorAPI *api.Server
	https       *http.Server
	tlsLn       net.Listener
	// api and apiLn serve the operator API when Config.APIListen is set.
	api   *http.Server
	apiLn net.Listener
	// stopWatches ends the event and object streams (at shutdown).
	stopWatches context.CancelFunc
}

// every runs fn beside the listeners, at start and then every d, until the
// server stops.
func (s *Server) every(d time.Duration, fn func(ctx context.Context)) {
	s.udpServers = append(s.udpServers, func(ctx context.Context) error {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			fn(ctx)
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
}

// kekPath is the key-encryption key's file.
func (s *Server) kekPath() string {
	return cmp.Or(s.cfg.KEKFile, filepath.Join(s.cfg.DataDir, "kek.key"))
}

// AuditHeadFile is the audit chain's anchored head, next to the key-encryption key:
// whoever can write only the database can move neither.
const AuditHeadFile = "audit.head"

// AuditKeyFile holds the audit chain's key, next to the key-encryption key.
const AuditKeyFile = "audit-chain.key"

// auditChainKey returns the audit chain's key: derived from the KEK the first time
// and kept in its own file, because a KEK rotation must not change the key that
// earlier entries were sealed with (the old KEK is deleted once a rotation ends).
// Replicas sharing a database copy it with the KEK; a replica that derives it from
// the same, never rotated KEK gets the same key.
func (s *Server) auditChainKey(keys *secrets.KeyRing) ([]byte, error) {
	path := filepath.Join(filepath.Dir(s.kekPath()), AuditKeyFile)
	if b, err := os.ReadFile(path); err == nil {
		key, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(key) != 32 {
			return nil, fmt.Errorf("audit chain key %s: not 64 hex digits", path)
		}
		return key, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("audit chain key: %w", err)
	}
	key, err := audit.KeyFromKEK(keys.CurrentKey())
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create the audit chain key: %w", err)
	}
	_, err = f.Write([]byte(hex.EncodeToString(key) + "\n"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("write the audit chain key: %w", err)
	}
	return key, nil
}

// keyAuditChain keys the audit chain and anchors its head beside the KEK. It runs
// before anything else appends to the chain.
func (s *Server) keyAuditChain(ctx context.Context, keys *secrets.KeyRing) error {
	key, err := s.auditChainKey(keys)
	if err != nil {
		return err
	}
	chain := audit.NewChain(key, filepath.Join(filepath.Dir(s.kekPath()), AuditHeadFile))
	chain.OnAnchorError = func(err error) { s.log.Error("audit head not anchored", "err", err) }
	keyer, ok := s.store.(store.AuditKeyer)
	if !ok {
		return errors.New("audit chain: the store cannot key it")
	}
	if err := keyer.KeyAuditChain(ctx, chain); err != nil {
		return fmt.Errorf("audit chain: %w", err)
	}
	s.auditChain = chain
	return nil
}

// openSecrets finishes a key rotation a crash interrupted.
func (s *Server) openSecrets(ctx context.Context, keys *secrets.KeyRing) error {
	s.secrets = &secrets.Service{Store: s.store, Keys: keys, Logger: s.log, MaxValueBytes: int(s.cfg.SecretMaxBytes),
		HandleTTL: s.cfg.SecretHandleTTL, PublicURL: s.cfg.PublicURL}
	if err := s.secrets.Reconcile(ctx); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return nil
}

// New opens the store (applying migrations), creates the first admin token if there is
// none, and binds the listener. Run serves.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("data dir: required (--data-dir)")
	}
	if err := cfg.OIDC.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, datadir.DirMode); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	// A data directory made by packaging (0755), or files written under umask
	// 022, would leave the KEK, the database and tokens readable by every local
	// user: fixed with a warning, or Kiln refuses to start.
	fixed, err := datadir.Secure(cfg.DataDir, cfg.artifactDir())
	for _, p := range fixed {
		log.Warn("data dir: removed group and other permissions", "path", p)
	}
	if err != nil {
		return nil, fmt.Errorf("data dir %s is not private, not starting: %w", cfg.DataDir, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	storeLatency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "kiln_store_operation_duration_seconds", Help: "Store transaction latency by operation.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"op"})
	reg.MustRegister(storeLatency)

	st, err := open.Open(ctx, cfg.DataDir, cfg.Database, sqlstore.Options{
		Observe: func(op string, d time.Duration) { storeLatency.WithLabelValues(op).Observe(d.Seconds()) },
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Server{cfg: cfg, log: log, store: st, registry: reg}
	// The key-encryption key (created at first start) keys the audit chain before
	// anything is appended to it.
	keys, err := secrets.LoadKeyRing(s.kekPath())
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	if err := s.keyAuditChain(ctx, keys); err != nil {
		st.Close()
		return nil, err
	}
	if err := s.bootstrapAdmin(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if err := s.openSecrets(ctx, keys); err != nil {
		st.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	s.listener = ln
	cliURL := "http://" + loopbackHostPort(ln.Addr().(*net.TCPAddr))
	if cfg.APIListen != "" {
		aln, err := net.Listen("tcp", cfg.APIListen)
		if err != nil {
			ln.Close()
			st.Close()
			return nil, fmt.Errorf("listen %s (--api-listen): %w", cfg.APIListen, err)
		}
		s.apiLn = aln
		cliURL = "https://" + loopbackHostPort(aln.Addr().(*net.TCPAddr))
		if cfg.APIPlaintext {
			cliURL = "http://" + loopbackHostPort(aln.Addr().(*net.TCPAddr))
		}
	}
	if err := atomicfile.Write(filepath.Join(cfg.DataDir, ServerURLFile), []byte(cliURL+"\n"), datadir.FileMode); err != nil {
		log.Warn("cannot record the server URL for the CLI", "err", err)
	}
	h, apiHandler, err := s.handler(ctx)
	if err != nil {
		s.closeListeners()
		st.Close()
		return nil, err
	}
	if cfg.HTTPSListen != "" {
		tln, err := net.Listen("tcp", cfg.HTTPSListen)
		if err != nil {
			s.closeListeners()
			st.Close()
			return nil, fmt.Errorf("listen %s: %w", cfg.HTTPSListen, err)
		}
		s.tlsLn = tln
		s.https = &http.Server{
			Handler:           h,
			TLSConfig:         s.enroll.TLSConfig(),
			ConnContext:       enroll.ConnContext,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       2 * time.Minute,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
	}
	// Files written while starting (the admin token, the CA certificate, the
	// database's -wal and -shm) are checked again; Kiln wrote them, so quietly.
	fixed, err = datadir.Secure(cfg.DataDir, cfg.artifactDir())
	for _, p := range fixed {
		log.Debug("data dir: removed group and other permissions", "path", p)
	}
	if err != nil {
		s.closeListeners()
		st.Close()
		return nil, fmt.Errorf("data dir %s is not private, not starting: %w", cfg.DataDir, err)
	}
	s.http = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if s.apiLn != nil {
		s.api = &http.Server{
			Handler:           apiHandler,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       2 * time.Minute,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		if !cfg.APIPlaintext {
			// The same certificate as the HTTPS listener, but no client
			// certificate requested: operators authenticate with API tokens.
			tc := s.enroll.TLSConfig()
			tc.ClientAuth, tc.ClientCAs = tls.NoClientCert, nil
			s.api.TLSConfig = tc
		}
	}
	return s, nil
}

// APIAddr is the operator API's own listener address (nil without APIListen).
func (s *Server) APIAddr() net.Addr {
	if s.apiLn == nil {
		return nil
	}
	return s.apiLn.Addr()
}

// Addr is the bound listener address.
func (s *Server) Addr() net.Addr { return s.listener.Addr() }

// Store is the opened store.
func (s *Server) Store() store.Store { return s.store }

// handler builds the boot handler (boot, configs, enrollment, agent API) and the
// operator API handler (API, metrics). Without APIListen they are one: the API
// is registered on the boot mux and api is nil.
func (s *Server) handler(ctx context.Context) (boot_, api_ http.Handler, err error) {
	mux := http.NewServeMux()
	apiMux := mux
	if s.cfg.APIListen != "" {
		apiMux = http.NewServeMux()
	}
	inv := &inventory.Service{Store: s.store, Check: checkObject}
	scripts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_boot_scripts_total", Help: "iPXE scripts served, by kind (install, local-disk, discovery, ignore).",
	}, []string{"kind"})
	s.registry.MustRegister(scripts)
	// At 0 from the start, so that rate() over them works before the first boot.
	for _, kind := range []string{boot.ScriptInstall, boot.ScriptLocal, boot.ScriptDiscovery, boot.ScriptIgnore} {
		scripts.WithLabelValues(kind)
	}
	artifactDir := s.cfg.artifactDir()
	sources, err := boot.ParseSourcePolicy(s.cfg.ArtifactAllow)
	if err != nil {
		return nil, nil, fmt.Errorf("--artifact-allow: %w", err)
	}
	trusted, err := loadArtifactKeys(s.cfg.ArtifactKeys)
	if err != nil {
		return nil, nil, err
	}
	wfe := &workflow.Engine{Store: s.store, ArtifactURL: s.artifactURL}
	b := &boot.Server{
		// A phone-home that names its A/B slot also updates the machine's slot record.
		Inventory:   phoneHomeSlots{Service: inv, engine: wfe, log: s.log},
		Artifacts:   &boot.ArtifactStore{Dir: artifactDir, Recorder: inv, Sources: sources, MaxRemoteBytes: s.cfg.ArtifactMaxBytes, TrustedKeys: trusted},
		Policy:      boot.Policy{DiscoveryProfile: s.cfg.DiscoveryProfile, FailedBootsAgent: s.cfg.FailedBootsAgent},
		Logger:      s.log,
		AgentKernel: s.cfg.AgentKernel,
		AgentInitrd: s.cfg.AgentInitrd,
		OnScript:    func(kind string) { scripts.WithLabelValues(kind).Inc() },
	}
	b.AgentDeadline = s.cfg.UKIAgentDeadline
	b.Register(mux)
	// The agent watches of UKI boots end with the server, before the store closes.
	s.udpServers = append(s.udpServers, func(ctx context.Context) error {
		<-ctx.Done()
		b.StopWatches()
		return nil
	})
	s.registerIPXEFiles(mux, inv)
	// Fetch remote kernels and initrds (those profiles boot) ahead of the machines;
	// disk images go from their source to the agent, not through Kiln.
	s.every(time.Minute, func(ctx context.Context) {
		var objs []*resource.Object
		err := s.store.View(ctx, func(tx store.Tx) error {
			profiles, _, err := tx.List(ctx, "Profile", store.ListOptions{})
			if err != nil {
				return err
			}
			booted := map[string]bool{s.cfg.AgentKernel: true, s.cfg.AgentInitrd: true}
			for _, p := range profiles {
				if ps, err := resource.Typed[resource.ProfileSpec](p); err == nil {
					booted[ps.Boot.Kernel] = true
					booted[string(ps.Boot.UKI)] = true
					for _, i := range ps.Boot.Initrds {
						booted[i] = true
					}
				}
			}
			arts, _, err := tx.List(ctx, "Artifact", store.ListOptions{})
			for _, a := range arts {
				if booted[a.Metadata.Name] {
					objs = append(objs, a)
				}
			}
			return err
		})
		if err == nil {
			_, err = b.Artifacts.Prefetch(ctx, objs)
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("prefetch remote artifacts", "err", err)
		}
	})
	events := newEventSink(s.store, s.log, s.registry)
	s.udpServers = append(s.udpServers, events.run)
	if len(s.cfg.DHCPInterfaces) > 0 {
		d, err := s.newDHCP(events)
		if err != nil {
			return nil, nil, err
		}
		ifaces := s.cfg.DHCPInterfaces
		s.udpServers = append(s.udpServers, func(ctx context.Context) error {
			if err := d.ListenAndServe(ctx, ifaces); err != nil {
				return fmt.Errorf("dhcp on %v: %w", ifaces, err)
			}
			return nil
		})
	}
	if s.cfg.TFTPListen != "" {
		t := s.newTFTP(inv)
		addr := s.cfg.TFTPListen
		s.udpServers = append(s.udpServers, func(ctx context.Context) error {
			if err := t.ListenAndServe(ctx, addr); err != nil {
				return fmt.Errorf("tftp %s: %w", addr, err)
			}
			return nil
		})
	}
	s.every(retentionEvery, func(ctx context.Context) { s.retain(ctx, time.Now()) })
	// Time out workflows whose agent went silent, and upgraded slots that did not
	// phone home.
	s.every(15*time.Second, func(ctx context.Context) {
		if n, err := wfe.Sweep(ctx); err != nil {
			s.log.Warn("workflow sweep", "err", err)
		} else if n > 0 {
			s.log.Info("workflows timed out", "count", n)
		}
		late, err := wfe.SweepSlotDeadlines(ctx)
		if err != nil {
			s.log.Warn("slot deadline sweep", "err", err)
		}
		for _, m := range late {
			job, err := s.power.cycleAfterSlotDeadline(ctx, m)
			if err != nil {
				s.log.Warn("power-cycle after the slot deadline", "machine", m, "err", err)
				continue
			}
			s.log.Warn("upgraded slot past its deadline", "machine", m, "power_job", job)
		}
	})
	ss := &secrets.Server{Service: s.secrets, Actor: api.ActorOf, Logger: s.log}
	if err := s.startWebhooks(); err != nil {
		return nil, nil, err
	}
	ss.RegisterPublic(mux)
	s.power = newPowerService(s.store, inv, s.secrets, s)
	if n, err := s.power.sweepJobs(ctx, true, time.Now()); err != nil {
		s.log.Warn("power jobs left by the last run", "err", err)
	} else if n > 0 {
		s.log.Warn("power jobs left unfinished by the last run marked failed", "count", n)
	}
	// Fail power jobs whose server died while running them (another replica).
	s.every(time.Minute, func(ctx context.Context) {
		if n, err := s.power.sweepJobs(ctx, false, time.Now()); err != nil {
			s.log.Warn("power jobs sweep", "err", err)
		} else if n > 0 {
			s.log.Warn("power jobs whose server stopped marked failed", "count", n)
		}
	})
	a := &api.Server{
		PowerReprovision: s.power.reprovision,
		AuditChain:       s.auditChain,
		Workflows:        wfe,
		Inventory:        inv,
		Store:            s.store,
		Logger:           s.log,
		MaxBodyBytes:     s.cfg.MaxBodyBytes,
		Version:          s.cfg.Version,
		ArtifactSource:   b.Artifacts.CheckSource,
		AgentArtifacts:   slices.DeleteFunc([]string{s.cfg.AgentKernel, s.cfg.AgentInitrd}, func(a string) bool { return a == "" }),
		Watches:          s.newWatches(),
	}
	en, err := s.newEnroll(ctx, b)
	if err != nil {
		return nil, nil, err
	}
	en.Register(mux)
	en.RegisterAgent(mux)
	en.RegisterOperator(a.AddRoute)
	// Agent routes: every one behind AgentAuth (a verified, current machine certificate).
	ss.Identity = en.Identity
	ss.RegisterAgent(mux, en.AgentAuth)
	agentMux := http.NewServeMux()
	(&workflow.AgentAPI{Engine: wfe, Identity: en.Identity, Logger: s.log}).Register(agentMux)
	mux.Handle(agentwire.AgentPrefix, en.AgentAuth(agentMux))
	s.secrets.RotationHooks = append(s.secrets.RotationHooks, en.ResealHook)
	s.udpServers = append(s.udpServers, func(ctx context.Context) error { return en.Run(ctx, time.Hour) })
	s.enroll = en
	gauges := newStateGauges(s.registry)
	gauges.watchCertificates(en.CA().NotAfter, en.TLSConfig())
	s.every(stateGaugeInterval, func(ctx context.Context) {
		if err := gauges.refresh(ctx, s.store, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("state gauges", "err", err)
		}
	})
	ss.RegisterOperator(a.AddRoute)
	a.AddRoute("POST", "/api/v1/machines/{name}/power", store.RoleOperator, "Power a machine through its BMC: op on, off, cycle, soft-off, status, set-boot (device pxe, disk, cdrom), reprovision; wait runs it before answering", s.power.handle)
	a.AddRoute("POST", "/api/v1/power", store.RoleOperator, "Power every machine a label selector picks (bounded parallelism, one request at a time per BMC)", s.power.handle)
	if err := s.mountConsole(apiMux, a); err != nil {
		return nil, nil, err
	}
	a.Register(apiMux)
	s.operatorAPI = a
	healthz := func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	}
	readyz := func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.store.Ping(ctx); err != nil {
			s.log.Warn("readiness: store unreachable", "err", err)
			http.Error(w, "store unreachable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	}
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", readyz)
	apiMux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	instrumented := instrument(s.registry)
	limited := s.rateLimited(publicOnlyWithoutForwardSecrecy(mux))
	if apiMux == mux {
		return instrumented(limited), nil, nil
	}
	apiMux.HandleFunc("GET /healthz", healthz)
	apiMux.HandleFunc("GET /readyz", readyz)
	return instrumented(limited), instrumented(apiMux), nil
}

// Run serves until ctx ends, then shuts down gracefully: in-flight requests finish
// (up to ShutdownTimeout) and the store is closed. A protocol server that fails
// (a port taken, an interface missing) stops the whole process: a provisioning
// server that silently runs without DHCP is worse than one that does not start.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	// Logged before serving, so that anyone who reached the server can find the line.
	s.log.Info("kiln serving", "listen", s.listener.Addr().String(), "data_dir", s.cfg.DataDir, "store", storeKind(s.cfg.Database))
	go func() { errc <- s.http.Serve(s.listener) }()
	if s.api != nil {
		if s.api.TLSConfig != nil {
			go func() { errc <- s.api.ServeTLS(s.apiLn, "", "") }()
		} else {
			go func() { errc <- s.api.Serve(s.apiLn) }()
		}
		s.log.Info("kiln serving the operator API", "listen", s.apiLn.Addr().String(), "tls", s.api.TLSConfig != nil, "ca_fingerprint", s.enroll.CAFingerprint())
	}
	if s.https != nil {
		go func() { errc <- s.https.ServeTLS(s.tlsLn, "", "") }()
		s.log.Info("kiln serving https", "listen", s.tlsLn.Addr().String(), "ca_fingerprint", s.enroll.CAFingerprint())
	}
	var udp sync.WaitGroup
	for _, run := range s.udpServers {
		udp.Add(1)
		go func() {
			defer udp.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				errc <- err
			}
		}()
	}
	// The TCP listeners were bound in New and now serve; a UDP server that cannot
	// bind fails Run (errc) right after, and systemd sees the unit fail.
	s.notifySystemd(sdnotify.Ready, sdnotify.Status("serving on "+s.listener.Addr().String()))
	go func() {
		err := s.cfg.Systemd.RunWatchdog(ctx, s.store.Ping)
		if err != nil {
			s.log.Warn("systemd watchdog", "err", err)
		}
	}()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.notifySystemd(sdnotify.Stopping, sdnotify.Status("shutting down"))
	if s.stopWatches != nil {
		s.stopWatches() // streams never end on their own: end them before waiting for requests
	}
	timeout := s.cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s.log.Info("shutting down")
	if err := s.http.Shutdown(sctx); err != nil {
		s.log.Warn("shutdown", "err", err)
	}
	if s.https != nil {
		if err := s.https.Shutdown(sctx); err != nil {
			s.log.Warn("shutdown https", "err", err)
		}
	}
	if s.api != nil {
		if err := s.api.Shutdown(sctx); err != nil {
			s.log.Warn("shutdown api", "err", err)
		}
	}
	cancel()
	udp.Wait()
	if s.power != nil {
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.power.runner.Shutdown(pctx)
		pcancel()
	}
	if err := s.store.Close(); err != nil {
		s.log.Warn("close store", "err", err)
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// notifySystemd sends msgs to systemd when it started Kiln; a failure is logged,
// not fatal: the service still serves.
func (s *Server) notifySystemd(msgs ...string) {
	if err := s.cfg.Systemd.Notify(msgs...); err != nil {
		s.log.Warn("notify systemd", "err", err)
	}
}

// artifactURL is where an agent downloads an artifact: under the public URL when one
// is configured, else a path the agent resolves against the URL it reached Kiln by.
func (s *Server) artifactURL(name string) string {
	return strings.TrimRight(s.cfg.PublicURL, "/") + "/artifacts/" + url.PathEscape(name)
}

func storeKind(url string) string {
	if url == "" {
		return "sqlite"
	}
	if u, _, ok := cutScheme(url); ok {
		return u
	}
	return "unknown"
}

func cutScheme(s string) (string, string, bool) {
	for i := 0; i+2 < len(s); i++ {
		if s[i:i+3] == "://" {
			return s[:i], s[i+3:], true
		}
	}
	return "", "", false
}

// bootstrapAdmin creates the first admin token when the store has none, and writes it
// to the data dir (mode 0600). The check and the insert are one write transaction, so
// two replicas starting together create one.
func (s *Server) bootstrapAdmin(ctx context.Context) error {
	var tok string
	err := s.store.Update(ctx, func(tx store.Tx) error {
		existing, err := tx.ListAPITokens(ctx)
		if err != nil {
			return err
		}
		if len(existing) > 0 {
			return nil
		}
		var t *store.APIToken
		tok, t, err = apitoken.New(store.RoleAdmin, "bootstrap-admin", time.Now())
		if err != nil {
			return err
		}
		if err := tx.CreateAPIToken(ctx, t); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, &audit.Entry{Time: time.Now().UTC(), Actor: "system", Action: "create",
			Kind: "APIToken", Name: t.ID, Summary: "created: role admin, name \"bootstrap-admin\" (first start)"})
	})
	if err != nil {
		return fmt.Errorf("bootstrap admin token: %w", err)
	}
	if tok == "" {
		return nil
	}
	path := filepath.Join(s.cfg.DataDir, AdminTokenFile)
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("write admin token: %w", err)
	}
	s.log.Info("created the first admin API token", "path", path)
	fmt.Fprintf(os.Stderr, "kiln: created the first admin API token in %s (mode 0600); the CLI on this host uses it\n", path)
	return nil
}

// loopbackHostPort is how the CLI on this host reaches a listener: a wildcard
// address becomes 127.0.0.1.
func loopbackHostPort(addr *net.TCPAddr) string {
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// newEnroll opens the CA and token signing key (creating them at first start, sealed
// under the key-encryption key, in the store so replicas share them) and connects
// enrollment to the boot path: agent boots carry a per-boot join token, and iPXE
// builds with a client certificate get their script by it.
func (s *Server) newEnroll(ctx context.Context, b *boot.Server) (*enroll.Server, error) {
	enrollURL := s.cfg.EnrollURL
	if enrollURL == "" && s.cfg.HTTPSListen != "" {
		_, port, _ := net.SplitHostPort(s.cfg.HTTPSListen)
		host := "127.0.0.1"
		if u, err := url.Parse(s.cfg.PublicURL); err == nil && u.Hostname() != "" {
			host = u.Hostname()
		} else if h, _, err := net.SplitHostPort(s.cfg.HTTPSListen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
			host = h
		}
		enrollURL = "https://" + net.JoinHostPort(host, port)
	}
	en, err := enroll.New(ctx, s.store, enroll.Config{
		DataDir: s.cfg.DataDir, KEK: s.secrets.Keys.CurrentKey(),
		ImportCACert: s.cfg.CAImportCert, ImportCAKey: s.cfg.CAImportKey,
		PublicURL: enrollURL, ServerSANs: s.cfg.ServerSANs, ServerRSA: s.cfg.ServerRSA,
		BootCA:  s.cfg.HTTPSListen != "" && (s.cfg.BootCA || s.cfg.BootHTTPS != "" && s.cfg.BootHTTPS != string(dhcp.HTTPSNever)),
		CertTTL: s.cfg.CertTTL, BootTokenTTL: s.cfg.BootTokenTTL, RegisterByMAC: s.cfg.EnrollByMAC,
		ApprovalWithoutToken: s.cfg.EnrollApprovalWithoutToken, ApprovalTTL: s.cfg.EnrollApprovalTTL,
		BootTokensForNew: s.cfg.BootTokensForNew, TPMEKRoots: s.cfg.TPMEKRoots,
	})
	if err != nil {
		return nil, fmt.Errorf("enrollment: %w", err)
	}
	// Secret handles point at the HTTPS listener, and rendered configs trust the CA
	// behind its certificate.
	s.secrets.HandleURL, s.secrets.CACertPEM = enrollURL, en.CACertificatePEM()
	en.Logger = s.log
	en.ActorOf = func(r *http.Request) string { return api.ActorOf(r).ID }
	en.RoleOf = func(r *http.Request) string { return api.ActorOf(r).Role }
	en.Scripts = b
	// A TPM quote's kernel is checked against the kernel and UKI Kiln serves.
	en.BootApplications = func(ctx context.Context, tx store.Tx, ps *resource.ProfileSpec) (map[string]string, error) {
		apps, err := b.BootApplications(ctx, tx, ps)
		if err != nil {
			return nil, err
		}
		out := make(map[string]string, len(apps))
		for d, a := range apps {
			out[d] = a.Role + " " + a.Artifact
		}
		return out, nil
	}
	b.Credentials = en.BootCmdline
	enrolls := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "kiln_enrollment_duration_seconds", Help: "Enrollment latency by outcome (issued, pending, refused-<HTTP status>, error).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
	}, []string{"outcome"})
	s.registry.MustRegister(enrolls)
	for _, outcome := range []string{"issued", "pending", "error"} {
		enrolls.WithLabelValues(outcome) // at 0 before the first enrollment
	}
	en.OnEnroll = func(outcome string, d time.Duration) { enrolls.WithLabelValues(outcome).Observe(d.Seconds()) }
	return en, nil
}

// checkObject validates what a kind's own spec cannot know: a Template's actions
// against what the agent runs.
func checkObject(o *resource.Object) error {
	if o.Kind == "Profile" {
		return checkProfileTemplates(o)
	}
	if o.Kind != "Template" {
		return nil
	}
	spec, err := resource.Typed[resource.TemplateSpec](o)
	if err != nil {
		return err
	}
	actions := make([]agentwire.Action, len(spec.Actions))
	for i, a := range spec.Actions {
		actions[i] = agentwire.Action{Name: a.Name, Type: a.Type, Args: a.Args}
	}
	return agentwire.CheckActions(actions)
}

// loadArtifactKeys reads the minisign public keys artifact signatures are checked
// with (--artifact-key).
func loadArtifactKeys(paths []string) (minisign.KeyRing, error) {
	var ring minisign.KeyRing
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("--artifact-key: %w", err)
		}
		k, err := minisign.ParsePublicKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("--artifact-key %s: %w", p, err)
		}
		ring = append(ring, k)
	}
	return ring, nil
}
