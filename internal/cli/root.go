// Package cli holds the `kiln` commands. Server commands wire configuration to
// internal/server; every other command is a client of the operator API.
package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/gctune"
	"github.com/kilnhq/kiln/internal/ratelimit"
	"github.com/kilnhq/kiln/internal/server"
	"github.com/kilnhq/kiln/internal/sso"
	"github.com/kilnhq/kiln/internal/tftp"
)

// Version and Commit are set at build time (-ldflags "-X
// github.com/kilnhq/kiln/internal/cli.Version=v1.2.3 -X ...cli.Commit=<sha>"; make
// release does). A build without them reports the commit that `go build` stamped
// from the checkout, if any.
var (
	Version = "dev"
	Commit  = ""
)

// DefaultDataDir is where `kiln serve` keeps its state and the CLI looks for it.
const DefaultDataDir = "/var/lib/kiln"

type globalFlags struct {
	server  string
	token   string
	dataDir string
	timeout time.Duration
	// caFingerprint pins an https server's CA; knownServers remembers the CAs
	// trusted on first use (servertrust.go).
	caFingerprint string
	knownServers  string
	// contextName selects a context of the client config (clientconfig.go), which
	// is clientConfig or the default file.
	contextName  string
	clientConfig string
	// dataDirSet: --data-dir or KILN_DATA_DIR was given, so its server.url ranks
	// as a flag, above the context.
	dataDirSet bool
	// dnsDomain and dnsServer steer the DNS SRV lookup of a server when none is
	// given (discovery.go).
	dnsDomain string
	dnsServer string
	errOut    io.Writer
}

// NewRoot builds the command tree. Output goes to out, diagnostics to errOut.
func NewRoot(out, errOut io.Writer) *cobra.Command {
	g := &globalFlags{errOut: errOut}
	root := &cobra.Command{
		Use:           "kiln",
		Short:         "Kiln provisions bare-metal servers and VMs over the network",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			g.dataDirSet = cmd.Flags().Changed("data-dir")
			return nil
		},
	}
	root.SetOut(out)
	root.SetErr(errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", "", "Kiln API URL (env KILN_SERVER; default: the URL the local server recorded in the data dir, else http://127.0.0.1:8080)")
	pf.StringVar(&g.token, "token", "", "API token (env KILN_TOKEN; default: the admin token in the data dir)")
	pf.StringVar(&g.dataDir, "data-dir", DefaultDataDir, "data directory (env KILN_DATA_DIR)")
	pf.StringVar(&g.caFingerprint, "ca-fingerprint", "", "SHA-256 fingerprint of the Kiln CA an https server must present (kiln ca show); default: the data dir's ca.crt for the local server, else the one remembered in --known-servers, else trusted on first use and remembered (env KILN_CA_FINGERPRINT)")
	pf.StringVar(&g.knownServers, "known-servers", "", "file of the CA fingerprints of https servers trusted on first use, like ssh's known_hosts; default <user config dir>/kiln/known_servers (env KILN_KNOWN_SERVERS)")
	pf.StringVar(&g.contextName, "context", "", "the client config's context to use instead of its current-context (env KILN_CONTEXT; kiln config get-contexts)")
	pf.StringVar(&g.clientConfig, "client-config", "", "the client config file of named contexts; default <user config dir>/kiln/config.yaml (env KILN_CLIENT_CONFIG)")
	pf.StringVar(&g.dnsDomain, "dns-domain", "", "with no server given: find Kiln by DNS SRV _kiln._tcp.DOMAIN; default: the search domains of /etc/resolv.conf (env KILN_DNS_DOMAIN)")
	pf.StringVar(&g.dnsServer, "dns-server", "", "DNS server (IP[:PORT]) for that SRV lookup instead of the system's resolver (env KILN_DNS_SERVER)")
	g.timeout = defaultTimeout
	pf.Var((*secondsDuration)(&g.timeout), "request-timeout", "timeout of each API request: a duration (30s, 2m) or a number of seconds, as kubectl takes it; 0: none (env KILN_REQUEST_TIMEOUT)")

	root.AddCommand(
		newServeCmd(g),
		newVersionCmd(g),
		newApplyCmd(g),
		newGetCmd(g),
		newDescribeCmd(g),
		newDeleteCmd(g),
		newEditCmd(g),
		newLabelCmd(g),
		newDiffCmd(g),
		newAPITokenCmd(g),
		newAuditCmd(g),
		newMachineCmd(g),
		newLogsCmd(g),
		newSecretCmd(g),
		newRenderCmd(g),
		newAgentCmd(g),
		newImageCmd(g),
		newJoinTokenCmd(g),
		newEnrollmentCmd(g),
		newAttestationCmd(g),
		newCACmd(g),
		newDoctorCmd(g),
		newBackupCmd(g),
		newRestoreCmd(g),
		newConfigCmd(g),
		newLoginCmd(g),
		newLogoutCmd(g),
	)
	refuseUnknownSubcommands(root)
	return root
}

// newVersionCmd prints the version on the first line ("kiln v1.2.3", as before
// commit and Go version were added, for scripts that read only that line), then one
// "key: value" line each for the commit, the Go version and the platform, then the
// server's version (GET /api/v1/version) unless --client; an unreachable server is
// said, not an error, as kubectl version does.
func newVersionCmd(g *globalFlags) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client's version, commit and Go version, and the server's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "kiln %s\ncommit: %s\ngo: %s\nplatform: %s/%s\n",
				Version, cmp.Or(Commit, stampedCommit(), "unknown"), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			if clientOnly {
				return
			}
			// The client's version must print quickly even when the server hangs.
			sg := *g
			if sg.timeout <= 0 || sg.timeout > 5*time.Second {
				sg.timeout = 5 * time.Second
			}
			var sv api.VersionResponse
			if err := call(cmd, &sg, http.MethodGet, "/api/v1/version", nil, nil, &sv); err != nil {
				fmt.Fprintf(w, "server: unknown (%v)\n", err)
				return
			}
			fmt.Fprintf(w, "server: %s (go %s, %s)\n", sv.Version, sv.GoVersion, sv.Platform)
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "only the client's version; do not ask the server")
	return cmd
}

// stampedCommit is the commit `go build` recorded from the checkout (absent with
// -buildvcs=false, which release builds use), with "-dirty" for uncommitted changes.
func stampedCommit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" && modified == "true" {
		rev += "-dirty"
	}
	return rev
}

// Execute runs the CLI and returns the process exit code.
func Execute() int {
	root := NewRoot(os.Stdout, os.Stderr)
	if err := root.Execute(); err != nil {
		if errors.Is(err, errDifferences) {
			return 1 // kiln diff printed them; like diff, no message
		}
		// An error from the server already says so ("Error from server (NotFound): ...").
		if _, fromServer := errors.AsType[*APIError](err); fromServer {
			fmt.Fprintln(os.Stderr, err)
		} else {
			fmt.Fprintln(os.Stderr, "Error:", err)
		}
		return 1
	}
	return 0
}

// envAnnotation names a flag's variable where it is not KILN_<FLAG> (the agent's
// --server reads KILN_AGENT_SERVER, not the operator's KILN_SERVER).
const envAnnotation = "kiln-env"

// noEnv, as a flag's envAnnotation, binds it to no variable (a flag that shadows a
// global one with another meaning: `kiln config set-context --server`).
const noEnv = "-"

// envName is the environment variable bound to a flag: --data-dir -> KILN_DATA_DIR.
func envName(flag string) string {
	return "KILN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// flagEnvName is the variable bound to f: its envAnnotation, else envName.
func flagEnvName(f *pflag.Flag) string {
	if v := f.Annotations[envAnnotation]; len(v) == 1 {
		return v[0]
	}
	return envName(f.Name)
}

func setEnvName(f *pflag.Flag, name string) {
	if f.Annotations == nil {
		f.Annotations = map[string][]string{}
	}
	f.Annotations[envAnnotation] = []string{name}
}

// bindEnv sets every flag not given on the command line from its KILN_* variable.
func bindEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := flagEnvName(f)
		if name == noEnv {
			return
		}
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		vals := []string{v}
		if f.Value.Type() == "stringArray" {
			vals = strings.Split(v, ",")
		}
		for _, v := range vals {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", name, v, e)
			}
		}
	})
	return err
}

// bindConfigFile sets every flag given neither on the command line nor in the
// environment from the YAML config file. Unknown keys are an error.
func bindConfigFile(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(data, &vals); err != nil {
		return fmt.Errorf("config file %s: %v", path, err)
	}
	for k, v := range vals {
		if k == oidcConfigKey {
			continue // a section, not a flag: read by oidcConfig
		}
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("config file %s: %s: unknown setting (see kiln serve --help)", path, k)
		}
		if f.Changed {
			continue
		}
		if _, inEnv := os.LookupEnv(envName(k)); inEnv {
			continue
		}
		var s string
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				if err := fs.Set(k, fmt.Sprint(e)); err != nil {
					return fmt.Errorf("config file %s: %s: %v", path, k, err)
				}
			}
			continue
		default:
			s = fmt.Sprint(x)
		}
		if err := fs.Set(k, s); err != nil {
			return fmt.Errorf("config file %s: %s: %v", path, k, err)
		}
	}
	return nil
}

func newServeCmd(g *globalFlags) *cobra.Command {
	var (
		cfg        server.Config
		configFile string
		defaultCfg string
		logFormat  string
		logLevel   string
		pprofAddr  string
		rateLimits []string
		oidcFlags  sso.Config
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Kiln server",
		Long: `Run the Kiln server: operator API, health and metrics endpoints.

Every setting can be given as a flag, as an environment variable KILN_<FLAG>
(--data-dir is KILN_DATA_DIR) or as a key of the YAML file given by --config
(data-dir: /var/lib/kiln), by default /etc/kiln/kiln.yaml when it exists; flags
win over the environment, the environment over the file. On first start Kiln creates an admin API token in <data-dir>/admin.token
(mode 0600); the CLI on the same host uses it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			configFile, err := serveConfigFile(configFile, defaultCfg)
			if err != nil {
				return err
			}
			if configFile != "" {
				if err := bindConfigFile(cmd.Flags(), configFile); err != nil {
					return err
				}
			}
			if cfg.OIDC, err = oidcConfig(configFile, oidcFlags); err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return err
			}
			if cfg.RateLimits, err = parseRateLimits(rateLimits); err != nil {
				return err
			}
			gctune.Tune(log)
			cfg.DataDir = g.dataDir
			cfg.Version = Version
			cfg.Systemd = systemdNotifier()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if pprofAddr != "" {
				if err := servePprof(ctx, pprofAddr, log); err != nil {
					return err
				}
			}
			srv, err := server.New(ctx, cfg, log)
			if err != nil {
				return err
			}
			return srv.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML config file whose keys are these flags' names; default "+DefaultConfigFile+" when it exists (env KILN_CONFIG)")
	// Hidden: tests (and packagers with another layout) move the default.
	f.StringVar(&defaultCfg, "default-config", DefaultConfigFile, "config file read when --config is not given and it exists (env KILN_DEFAULT_CONFIG)")
	f.MarkHidden("default-config")
	f.StringVar(&cfg.Database, "database", "", "database URL: empty for the embedded SQLite store in --data-dir, or postgres://user:pass@host/db (env KILN_DATABASE)")
	f.StringVar(&cfg.Listen, "listen", "0.0.0.0:8080", "HTTP listen address for the boot endpoints, and the operator API unless --api-listen is set (env KILN_LISTEN)")
	f.StringVar(&cfg.APIListen, "api-listen", "", "the operator API's own listen address, HTTPS with the server certificate (recommended: 127.0.0.1:9443 or a management address); the boot listeners then serve no API; empty: the API is on --listen and --https-listen as before (env KILN_API_LISTEN)")
	f.BoolVar(&cfg.APIPlaintext, "api-plaintext", false, "serve --api-listen over plain HTTP, for a TLS-terminating proxy on the same host (env KILN_API_PLAINTEXT)")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", api.DefaultMaxBodyBytes, "largest accepted API request body; larger ones get 413 (env KILN_MAX_BODY_BYTES)")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight requests may take to finish on SIGTERM (env KILN_SHUTDOWN_TIMEOUT)")
	f.StringVar(&cfg.ArtifactDir, "artifact-dir", "", "directory of local artifact files (kernels, initrds, images); default <data-dir>/artifacts (env KILN_ARTIFACT_DIR)")
	f.StringArrayVar(&cfg.ArtifactAllow, "artifact-allow", nil, "allow-list of remote artifact sources (repeatable): \"public\" (any address outside loopback, link-local, metadata, private, CGNAT, ULA, multicast), an address, a CIDR prefix, or a host name (*.example.com for subdomains); default: public only (env KILN_ARTIFACT_ALLOW, comma-separated)")
	f.StringArrayVar(&cfg.ArtifactKeys, "artifact-key", nil, "minisign public key file (.pub) artifact signatures are checked with, repeatable; when set, every artifact must carry a spec.signature by one of these keys to be served (env KILN_ARTIFACT_KEY, comma-separated)")
	f.DurationVar(&cfg.UKIAgentDeadline, "uki-agent-deadline", boot.DefaultAgentDeadline, "how long after a machine downloaded its UKI (spec.boot.uki) its agent must enroll before the timeline gets an AgentMissing event (a Secure Boot refusal looks like silence) (env KILN_UKI_AGENT_DEADLINE)")
	f.StringArrayVar(&cfg.WebhookAllow, "webhook-allow", nil, "allow-list of addresses webhooks may call (repeatable), as --artifact-allow: \"public\", an address, a CIDR prefix, or a host name; default: public only, so a Webhook cannot make Kiln call loopback, link-local or private addresses (env KILN_WEBHOOK_ALLOW, comma-separated)")
	f.Int64Var(&cfg.ArtifactMaxBytes, "artifact-max-bytes", boot.DefaultMaxRemoteBytes, "largest remote artifact fetched when its spec.size is not declared (env KILN_ARTIFACT_MAX_BYTES)")
	f.StringVar(&cfg.DiscoveryProfile, "discovery-profile", "", "profile booted by unknown machines where their subnet sets no policy; empty: they boot their next device (env KILN_DISCOVERY_PROFILE)")
	f.StringVar(&cfg.AgentKernel, "agent-kernel", "kiln-agent-kernel", "artifact holding the agent environment's kernel, booted by profiles with boot.agent (env KILN_AGENT_KERNEL)")
	f.StringVar(&cfg.AgentInitrd, "agent-initrd", "kiln-agent-initrd", "artifact holding the agent environment's initramfs (env KILN_AGENT_INITRD)")
	f.BoolVar(&cfg.FailedBootsAgent, "failed-boots-agent", false, "machines whose provisioning failed boot their profile again (for debugging) instead of the local disk (env KILN_FAILED_BOOTS_AGENT)")
	f.StringVar(&cfg.TFTPListen, "tftp-listen", "0.0.0.0:69", "TFTP listen address for iPXE binaries; empty disables TFTP (env KILN_TFTP_LISTEN)")
	f.IntVar(&cfg.TFTPMaxTransfers, "tftp-max-transfers", tftp.DefaultMaxTransfers, "most TFTP transfers running at once; more get ERROR \"server busy\" (env KILN_TFTP_MAX_TRANSFERS)")
	f.IntVar(&cfg.TFTPMaxTransfersPerAddress, "tftp-max-transfers-per-address", tftp.DefaultMaxTransfersPerAddress, "most TFTP transfers running at once for one client IP address (env KILN_TFTP_MAX_TRANSFERS_PER_ADDRESS)")
	f.DurationVar(&cfg.TFTPFirstACKTimeout, "tftp-first-ack-timeout", tftp.DefaultFirstACKTimeout, "longest TFTP retransmission timeout before the client's first ACK; a client-chosen timeout option applies only after it (env KILN_TFTP_FIRST_ACK_TIMEOUT)")
	f.StringArrayVar(&cfg.IPXEDirs, "ipxe-dir", []string{"/usr/lib/kiln/ipxe", "/usr/lib/ipxe"}, "directory of iPXE binaries (undionly.kpxe, ipxe.efi, snponly.efi, ipxe-arm64.efi), repeatable, searched in order per file; default: Debian 13's iPXE (HTTPS) where a package puts it, then Debian's ipxe package (env KILN_IPXE_DIR, comma-separated)")
	f.StringArrayVar(&cfg.DHCPInterfaces, "dhcp-interface", nil, "serve DHCP on this interface (repeatable); subnets come from Subnet objects; none: DHCP off (env KILN_DHCP_INTERFACE, comma-separated)")
	f.StringVar(&cfg.PublicURL, "public-url", "", "base URL machines reach Kiln's HTTP at (http://10.0.0.2:8080); default: the subnet's bootServer and the --listen port (env KILN_PUBLIC_URL)")
	f.StringVar(&cfg.KEKFile, "kek-file", "", "key-encryption key file (64 hex digits, mode 0600) for secrets and the CA key; default <data-dir>/kek.key, created at first start (env KILN_KEK_FILE)")
	f.Int64Var(&cfg.SecretMaxBytes, "secret-max-bytes", 1<<20, "largest secret value accepted (env KILN_SECRET_MAX_BYTES)")
	f.DurationVar(&cfg.SecretHandleTTL, "secret-handle-ttl", 5*time.Minute, "lifetime of single-use secret handles ({{ secretURL }}) (env KILN_SECRET_HANDLE_TTL)")
	f.StringVar(&cfg.HTTPSListen, "https-listen", "0.0.0.0:8443", "HTTPS listener: enrollment, the agent API (mTLS), and the boot endpoints (and the API, unless --api-listen is set) over TLS; empty disables it (env KILN_HTTPS_LISTEN)")
	f.StringVar(&cfg.EnrollURL, "enroll-url", "", "https URL agents enroll at, written into join tokens and agent kernel command lines; default: --public-url's host with the --https-listen port (env KILN_ENROLL_URL)")
	f.StringArrayVar(&cfg.ServerSANs, "server-san", nil, "DNS name or IP address of Kiln's server certificate (repeatable; default: this host's names and addresses) (env KILN_SERVER_SAN, comma-separated)")
	f.DurationVar(&cfg.CertTTL, "cert-ttl", 24*time.Hour, "lifetime of machine certificates; agents renew at two thirds (env KILN_CERT_TTL)")
	f.DurationVar(&cfg.BootTokenTTL, "boot-token-ttl", 10*time.Minute, "boot window: lifetime of the single-use join token minted, once per reprovision, into the agent boot script served to the machine's leased address (env KILN_BOOT_TOKEN_TTL)")
	f.BoolVar(&cfg.BootTokensForNew, "boot-tokens-for-new", false, "also mint per-boot join tokens for machines in state new, not only for reprovisioned ones (still bound to the leased address; see README#threat-model) (env KILN_BOOT_TOKENS_FOR_NEW)")
	f.StringVar(&cfg.CAImportCert, "ca-import-cert", "", "PEM file of an intermediate CA (and its issuers) to use instead of a generated one, at first start (env KILN_CA_IMPORT_CERT)")
	f.StringVar(&cfg.CAImportKey, "ca-import-key", "", "PEM file of that CA's private key (env KILN_CA_IMPORT_KEY)")
	f.BoolVar(&cfg.EnrollByMAC, "enroll-by-mac", false, "let machines in state provisioning enroll on their MAC alone, without a token (a MAC is self-reported: off by default) (env KILN_ENROLL_BY_MAC)")
	f.BoolVar(&cfg.EnrollApprovalWithoutToken, "enroll-approval-without-token", false, "let a host without a join token ask to be enrolled; its request waits for `kiln enrollment approve` (at most 1,000 pending, 5 per source address; off by default: anyone on the network could queue requests for an operator to approve by mistake) (env KILN_ENROLL_APPROVAL_WITHOUT_TOKEN)")
	f.StringVar(&cfg.TPMEKRoots, "tpm-ek-roots", "", "folder of TPM vendor certificates (PEM): EK certificates of TPM enrollments must chain to one of them; empty: EKs are trusted through their pin only (env KILN_TPM_EK_ROOTS)")
	f.DurationVar(&cfg.EnrollApprovalTTL, "enroll-approval-ttl", 24*time.Hour, "how long an enrollment request waits for an operator's decision before it expires (env KILN_ENROLL_APPROVAL_TTL)")
	f.BoolVar(&cfg.ServerRSA, "server-rsa-cert", false, "also serve an RSA server certificate, for TLS clients (old iPXE builds) without ECDSA (env KILN_SERVER_RSA_CERT)")
	f.StringVar(&cfg.BootHTTPS, "boot-https", "never", "which boot clients DHCP sends to the HTTPS listener (their firmware must trust the boot CA: kiln ca show --boot): never, efi (UEFI iPXE and UEFI HTTP boot) or always (BIOS iPXE too: only an iPXE rebuilt to trust the boot CA) (env KILN_BOOT_HTTPS)")
	f.BoolVar(&cfg.BootCA, "boot-ca", false, "create the RSA boot CA (for firmware TlsCaCertificate) without sending machines to HTTPS yet; --boot-https efi or always implies it (env KILN_BOOT_CA)")
	f.StringArrayVar(&rateLimits, "rate-limit", nil, "per-source-address rate limit of one class of unauthenticated endpoints, CLASS=RATE:BURST (requests per second, burst) or CLASS=off (repeatable); classes "+strings.Join(server.RateClasses(), ", ")+"; over it: 429 with Retry-After; default "+defaultRateLimits()+" (env KILN_RATE_LIMIT, comma-separated)")
	f.IntVar(&cfg.RateLimitSources, "rate-limit-sources", ratelimit.DefaultMaxSources, "most source addresses remembered per rate-limit class; the least recently seen are forgotten first (env KILN_RATE_LIMIT_SOURCES)")
	f.DurationVar(&cfg.EventRetention, "event-retention", server.DefaultEventRetention, "remove machine events (the boot timeline, agent logs) older than this, hourly; 0: keep by age (env KILN_EVENT_RETENTION)")
	f.IntVar(&cfg.EventRetentionCount, "event-retention-count", server.DefaultEventRetentionCount, "keep at most this many events per machine, the newest; 0: no count limit (env KILN_EVENT_RETENTION_COUNT)")
	f.IntVar(&cfg.WatchesPerCaller, "watches-per-token", api.DefaultWatchesPerCaller, "most event and object streams (?watch=1) one API token holds open at once; more are answered 429 (env KILN_WATCHES_PER_TOKEN)")
	f.DurationVar(&cfg.AuditRetention, "audit-retention", server.DefaultAuditRetention, "remove audit entries older than this, hourly, behind a retention checkpoint entry that keeps `kiln audit verify` working (e.g. 9600h, 400 days); 0: keep every entry (env KILN_AUDIT_RETENTION)")
	f.StringVar(&oidcFlags.Issuer, "oidc-issuer", "", "OpenID Connect issuer URL for the web console's single sign-on; overrides oidc.issuer of the config file, whose oidc: section also maps groups to roles (README#web-console-and-single-sign-on) (env KILN_OIDC_ISSUER)")
	f.StringVar(&oidcFlags.ClientID, "oidc-client-id", "", "Kiln's client ID at the OpenID provider; overrides oidc.clientID (env KILN_OIDC_CLIENT_ID)")
	f.StringVar(&oidcFlags.ClientSecretFile, "oidc-client-secret-file", "", "file holding Kiln's client secret at the OpenID provider; overrides oidc.clientSecretFile (env KILN_OIDC_CLIENT_SECRET_FILE)")
	f.StringVar(&oidcFlags.RedirectURL, "oidc-redirect-url", "", "the console's callback as browsers reach it, https://kiln.example.com:9443/ui/callback; overrides oidc.redirectURL (env KILN_OIDC_REDIRECT_URL)")
	f.StringVar(&pprofAddr, "pprof-listen", "", "serve Go's profiling endpoints (/debug/pprof/) on this address, for performance work; keep it on loopback; empty: off (env KILN_PPROF_LISTEN)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json (env KILN_LOG_FORMAT)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error (env KILN_LOG_LEVEL)")
	return cmd
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}

func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// secondsDuration is a duration flag that also takes a plain number as seconds
// (kubectl's --request-timeout 2), where pflag's duration would refuse it.
type secondsDuration time.Duration

func (d *secondsDuration) String() string { return time.Duration(*d).String() }
func (d *secondsDuration) Type() string   { return "duration" }

func (d *secondsDuration) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 {
			return fmt.Errorf("%q is negative", s)
		}
		*d = secondsDuration(time.Duration(n * float64(time.Second)))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration (30s, 2m) or a number of seconds", s)
	}
	*d = secondsDuration(v)
	return nil
}

// parseRateLimits reads --rate-limit values, CLASS=RATE:BURST or CLASS=off.
func parseRateLimits(vals []string) (map[string]ratelimit.Rate, error) {
	out := map[string]ratelimit.Rate{}
	for _, v := range vals {
		class, rate, ok := strings.Cut(v, "=")
		if !ok || !slices.Contains(server.RateClasses(), class) {
			return nil, fmt.Errorf("--rate-limit %q: want CLASS=RATE:BURST or CLASS=off, CLASS one of %s", v, strings.Join(server.RateClasses(), ", "))
		}
		r, err := ratelimit.ParseRate(rate)
		if err != nil {
			return nil, fmt.Errorf("--rate-limit %s: %w", class, err)
		}
		out[class] = r
	}
	return out, nil
}

func defaultRateLimits() string {
	var parts []string
	d := server.DefaultRateLimits()
	for _, c := range server.RateClasses() {
		parts = append(parts, c+"="+d[c].String())
	}
	return strings.Join(parts, ", ")
}
