// Package cli holds the `kiln` commands. Server commands wire configuration to
// internal/server; every other command is a client of the operator API.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/gctune"
	"github.com/kilnhq/kiln/internal/server"
)

// Version is set at build time (-ldflags "-X github.com/kilnhq/kiln/internal/cli.Version=...").
var Version = "dev"

// DefaultDataDir is where `kiln serve` keeps its state and the CLI looks for it.
const DefaultDataDir = "/var/lib/kiln"

type globalFlags struct {
	server  string
	token   string
	dataDir string
	timeout time.Duration
}

// NewRoot builds the command tree. Output goes to out, diagnostics to errOut.
func NewRoot(out, errOut io.Writer) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "kiln",
		Short:         "Kiln provisions bare-metal servers and VMs over the network",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return bindEnv(cmd.Flags())
		},
	}
	root.SetOut(out)
	root.SetErr(errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", "", "Kiln API URL (env KILN_SERVER; default: the URL the local server recorded in the data dir, else http://127.0.0.1:8080)")
	pf.StringVar(&g.token, "token", "", "API token (env KILN_TOKEN; default: the admin token in the data dir)")
	pf.StringVar(&g.dataDir, "data-dir", DefaultDataDir, "data directory (env KILN_DATA_DIR)")
	pf.DurationVar(&g.timeout, "request-timeout", defaultTimeout, "timeout of each API request (env KILN_REQUEST_TIMEOUT)")

	root.AddCommand(
		newServeCmd(g),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			Run: func(cmd *cobra.Command, args []string) {
				fmt.Fprintf(cmd.OutOrStdout(), "kiln %s\n", Version)
			},
		},
		newApplyCmd(g),
		newGetCmd(g),
		newDescribeCmd(g),
		newDeleteCmd(g),
		newAPITokenCmd(g),
		newAuditCmd(g),
		newMachineCmd(g),
		newLogsCmd(g),
		newSecretCmd(g),
		newRenderCmd(g),
		newAgentCmd(g),
		newImageCmd(g),
		newJoinTokenCmd(g),
		newCACmd(g),
	)
	return root
}

// Execute runs the CLI and returns the process exit code.
func Execute() int {
	root := NewRoot(os.Stdout, os.Stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		return 1
	}
	return 0
}

// envName is the environment variable bound to a flag: --data-dir -> KILN_DATA_DIR.
func envName(flag string) string {
	return "KILN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// bindEnv sets every flag not given on the command line from its KILN_* variable.
func bindEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		vals := []string{v}
		if f.Value.Type() == "stringArray" {
			vals = strings.Split(v, ",")
		}
		for _, v := range vals {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", envName(f.Name), v, e)
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
		logFormat  string
		logLevel   string
		pprofAddr  string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Kiln server",
		Long: `Run the Kiln server: operator API, health and metrics endpoints.

Every setting can be given as a flag, as an environment variable KILN_<FLAG>
(--data-dir is KILN_DATA_DIR) or as a key of the YAML file given by --config
(data-dir: /var/lib/kiln); flags win over the environment, the environment over
the file. On first start Kiln creates an admin API token in <data-dir>/admin.token
(mode 0600); the CLI on the same host uses it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if configFile != "" {
				if err := bindConfigFile(cmd.Flags(), configFile); err != nil {
					return err
				}
			}
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return err
			}
			gctune.Tune(log)
			cfg.DataDir = g.dataDir
			cfg.Version = Version
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
	f.StringVar(&configFile, "config", "", "YAML config file whose keys are these flags' names (env KILN_CONFIG)")
	f.StringVar(&cfg.Database, "database", "", "database URL: empty for the embedded SQLite store in --data-dir, or postgres://user:pass@host/db (env KILN_DATABASE)")
	f.StringVar(&cfg.Listen, "listen", "0.0.0.0:8080", "HTTP listen address for the API and boot endpoints (env KILN_LISTEN)")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", api.DefaultMaxBodyBytes, "largest accepted API request body; larger ones get 413 (env KILN_MAX_BODY_BYTES)")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight requests may take to finish on SIGTERM (env KILN_SHUTDOWN_TIMEOUT)")
	f.StringVar(&cfg.ArtifactDir, "artifact-dir", "", "directory of local artifact files (kernels, initrds, images); default <data-dir>/artifacts (env KILN_ARTIFACT_DIR)")
	f.StringVar(&cfg.DiscoveryProfile, "discovery-profile", "", "profile booted by unknown machines where their subnet sets no policy; empty: they boot their next device (env KILN_DISCOVERY_PROFILE)")
	f.StringVar(&cfg.AgentKernel, "agent-kernel", "kiln-agent-kernel", "artifact holding the agent environment's kernel, booted by profiles with boot.agent (env KILN_AGENT_KERNEL)")
	f.StringVar(&cfg.AgentInitrd, "agent-initrd", "kiln-agent-initrd", "artifact holding the agent environment's initramfs (env KILN_AGENT_INITRD)")
	f.BoolVar(&cfg.FailedBootsAgent, "failed-boots-agent", false, "machines whose provisioning failed boot their profile again (for debugging) instead of the local disk (env KILN_FAILED_BOOTS_AGENT)")
	f.StringVar(&cfg.TFTPListen, "tftp-listen", "0.0.0.0:69", "TFTP listen address for iPXE binaries; empty disables TFTP (env KILN_TFTP_LISTEN)")
	f.StringArrayVar(&cfg.IPXEDirs, "ipxe-dir", []string{"/usr/lib/kiln/ipxe", "/usr/lib/ipxe"}, "directory of iPXE binaries (undionly.kpxe, ipxe.efi, snponly.efi, ipxe-arm64.efi), repeatable, searched in order per file; default: Debian 13's iPXE (HTTPS) where a package puts it, then Debian's ipxe package (env KILN_IPXE_DIR, comma-separated)")
	f.StringArrayVar(&cfg.DHCPInterfaces, "dhcp-interface", nil, "serve DHCP on this interface (repeatable); subnets come from Subnet objects; none: DHCP off (env KILN_DHCP_INTERFACE, comma-separated)")
	f.StringVar(&cfg.PublicURL, "public-url", "", "base URL machines reach Kiln's HTTP at (http://10.0.0.2:8080); default: the subnet's bootServer and the --listen port (env KILN_PUBLIC_URL)")
	f.StringVar(&cfg.KEKFile, "kek-file", "", "key-encryption key file (64 hex digits, mode 0600) for secrets and the CA key; default <data-dir>/kek.key, created at first start (env KILN_KEK_FILE)")
	f.Int64Var(&cfg.SecretMaxBytes, "secret-max-bytes", 1<<20, "largest secret value accepted (env KILN_SECRET_MAX_BYTES)")
	f.DurationVar(&cfg.SecretHandleTTL, "secret-handle-ttl", 5*time.Minute, "lifetime of single-use secret handles ({{ secretURL }}) (env KILN_SECRET_HANDLE_TTL)")
	f.StringVar(&cfg.HTTPSListen, "https-listen", "0.0.0.0:8443", "HTTPS listener: enrollment, the agent API (mTLS), and the API and boot endpoints over TLS; empty disables it (env KILN_HTTPS_LISTEN)")
	f.StringVar(&cfg.EnrollURL, "enroll-url", "", "https URL agents enroll at, written into join tokens and agent kernel command lines; default: --public-url's host with the --https-listen port (env KILN_ENROLL_URL)")
	f.StringArrayVar(&cfg.ServerSANs, "server-san", nil, "DNS name or IP address of Kiln's server certificate (repeatable; default: this host's names and addresses) (env KILN_SERVER_SAN, comma-separated)")
	f.DurationVar(&cfg.CertTTL, "cert-ttl", 24*time.Hour, "lifetime of machine certificates; agents renew at two thirds (env KILN_CERT_TTL)")
	f.DurationVar(&cfg.BootTokenTTL, "boot-token-ttl", 10*time.Minute, "lifetime of the single-use join token minted into each agent boot script (env KILN_BOOT_TOKEN_TTL)")
	f.StringVar(&cfg.CAImportCert, "ca-import-cert", "", "PEM file of an intermediate CA (and its issuers) to use instead of a generated one, at first start (env KILN_CA_IMPORT_CERT)")
	f.StringVar(&cfg.CAImportKey, "ca-import-key", "", "PEM file of that CA's private key (env KILN_CA_IMPORT_KEY)")
	f.BoolVar(&cfg.EnrollByMAC, "enroll-by-mac", false, "let machines in state provisioning enroll on their MAC alone, without a token (a MAC is self-reported: off by default) (env KILN_ENROLL_BY_MAC)")
	f.BoolVar(&cfg.ServerRSA, "server-rsa-cert", false, "also serve an RSA server certificate, for TLS clients (old iPXE builds) without ECDSA (env KILN_SERVER_RSA_CERT)")
	f.StringVar(&cfg.BootHTTPS, "boot-https", "never", "which boot clients DHCP sends to the HTTPS listener (their firmware must trust the boot CA: kiln ca show --boot): never, efi (UEFI iPXE and UEFI HTTP boot) or always (BIOS iPXE too: only an iPXE rebuilt to trust the boot CA) (env KILN_BOOT_HTTPS)")
	f.BoolVar(&cfg.BootCA, "boot-ca", false, "create the RSA boot CA (for firmware TlsCaCertificate) without sending machines to HTTPS yet; --boot-https efi or always implies it (env KILN_BOOT_CA)")
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
