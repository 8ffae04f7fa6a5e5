package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/agent"
	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/discovery"
	"github.com/kilnhq/kiln/internal/image"
	"github.com/kilnhq/kiln/internal/resource"
)

// newAgentCmd is `kiln agent`: what runs on a machine in the agent environment.
func newAgentCmd(g *globalFlags) *cobra.Command {
	af := &agentFlags{global: g}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "The provisioning agent that runs on machines (in the agent environment)",
		// The agent never reads the operator's credentials: with KILN_TOKEN set in an
		// operator's shell, `kiln agent enroll --server https://X` would otherwise send
		// the API token to X. --token given here is a mistake worth stopping.
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("token") {
				return errors.New("--token is the operator's API token; the agent's join token is --join-token (env KILN_JOIN_TOKEN)")
			}
			return bindEnv(cmd.Flags())
		},
	}
	pf := cmd.PersistentFlags()
	// Shadows the global --server, so that KILN_SERVER (the operator's API) is not
	// taken for the enrollment URL.
	pf.StringVar(&af.server, "server", "", "Kiln's https:// enrollment URL (env KILN_AGENT_SERVER; never KILN_SERVER, the operator's API)")
	setEnvName(pf.Lookup("server"), "KILN_AGENT_SERVER")
	pf.StringVar(&af.joinToken, "join-token", "", "join token (env KILN_JOIN_TOKEN; never --token or KILN_TOKEN, the operator's API token)")
	cmd.AddCommand(newAgentRunCmd(af), newAgentInitCmd(), newAgentFactsCmd(), newAgentActionCmd())
	cmd.AddCommand(agentEnrollCmds(af)...)
	return cmd
}

// agentFlags are the agent's own enrollment parameters, apart from the operator's
// global --server and --token.
type agentFlags struct {
	server    string
	joinToken string
	// global holds --dns-domain and --dns-server, for finding Kiln by DNS SRV
	// when no server is given (a hand-enrolled host).
	global *globalFlags
}

// discoverServer finds the enrollment URL by DNS SRV (_kiln._tcp.<domain>). The
// server is trusted only through the CA fingerprint enrollment pins anyway.
func (af *agentFlags) discoverServer() (string, error) {
	g := af.globals()
	domains, _ := dnsDomains(g)
	if len(domains) == 0 {
		return "", errors.New("--server: required (Kiln's https:// enrollment URL), or --dns-domain (or a search domain in " + ResolvConf + ") to find it by DNS SRV _kiln._tcp.DOMAIN")
	}
	u, err := discover(g, domains)
	if err != nil {
		return "", fmt.Errorf("--server: required: none given, and finding Kiln by DNS SRV failed: %w", err)
	}
	return u, nil
}

// globals are the root's flags (none when the command was built alone, in tests).
func (af *agentFlags) globals() *globalFlags {
	if af.global == nil {
		return &globalFlags{}
	}
	return af.global
}

// dialer is the enrollment's dialer: with --dns-server, names resolve there too (the
// SRV target's name as its SRV record); nil, the default, otherwise.
func (af *agentFlags) dialer() (*net.Dialer, error) {
	g := af.globals()
	if g.dnsServer == "" {
		return nil, nil
	}
	r, err := discovery.Resolver(g.dnsServer)
	if err != nil {
		return nil, fmt.Errorf("--dns-server: %w", err)
	}
	return &net.Dialer{Resolver: r}, nil
}

func newAgentRunCmd(af *agentFlags) *cobra.Command {
	var (
		dir, caFP, logLevel string
		once                bool
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Enroll with Kiln if needed, report facts and run this machine's workflows",
		Long: `Enroll this machine with Kiln (once: the key and certificate are kept in --dir),
report its hardware facts, then run the workflow Kiln has for it, action by action,
reporting progress and results. Kiln being unreachable only delays the agent; a
restart of either side resumes the workflow without redoing finished actions.

To enroll it needs Kiln's https:// URL (--server), the CA fingerprint and a join
token (--join-token). Each comes from its flag, its variable (KILN_AGENT_SERVER,
KILN_CA_FINGERPRINT, KILN_JOIN_TOKEN), or the kernel command line (kiln.server=,
kiln.ca_fingerprint=, kiln.token=), in that order. The operator's KILN_SERVER and
KILN_TOKEN are never read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), "text", logLevel)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmdContext(cmd), os.Interrupt, syscall.SIGTERM)
			defer stop()
			server, joinToken := af.server, af.joinToken
			if b, err := os.ReadFile("/proc/cmdline"); err == nil {
				s, fp, tok := agent.CmdlineEnrollment(string(b))
				server, caFP, joinToken = cmp.Or(server, s), cmp.Or(caFP, fp), cmp.Or(joinToken, tok)
			}
			if _, err := agent.Load(dir); server == "" && errors.Is(err, os.ErrNotExist) {
				// Not enrolled and no kiln.server= on the kernel command line: a
				// hand-enrolled host may find Kiln by DNS SRV.
				if server, err = af.discoverServer(); err != nil {
					return err
				}
				log.Info("found kiln by DNS SRV", "server", server)
			}
			dialer, err := af.dialer()
			if err != nil {
				return err
			}
			id, err := loadOrEnroll(ctx, log, agent.EnrollOptions{Server: server, CAFingerprint: caFP, Token: joinToken, Dir: dir, Facts: agent.Facts(), Dialer: dialer})
			if err != nil {
				return err
			}
			log.Info("enrolled", "machine", id.Machine, "server", id.Server, "cert_not_after", id.Cert.NotAfter)
			t := agent.NewMTLSTransport(id)
			var wg sync.WaitGroup
			rctx, cancel := context.WithCancel(ctx)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := t.RunRenewal(rctx, log); err != nil {
					log.Error("certificate renewal", "err", err)
				}
			}()
			a := &agent.Agent{
				Transport: t, Dir: dir, Logger: log.With("machine", id.Machine),
				Facts: func(context.Context) (map[string]any, error) { return agent.Facts(), nil },
			}
			err = a.Run(ctx, once)
			cancel()
			wg.Wait()
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", agent.DefaultDir, "directory of the machine's key, certificate and pending results (mode 0700) (env KILN_DIR)")
	f.StringVar(&caFP, "ca-fingerprint", "", "SHA-256 fingerprint of Kiln's CA, pinned on first contact (env KILN_CA_FINGERPRINT)")
	f.BoolVar(&once, "once", false, "run the current workflow, if any, and exit")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error (env KILN_LOG_LEVEL)")
	return cmd
}

// loadOrEnroll returns the stored identity, or enrolls. Enrollment is retried while
// Kiln is unreachable; a refusal (a bad or used-up token, a CA that does not match
// the fingerprint) is returned.
func loadOrEnroll(ctx context.Context, log *slog.Logger, opts agent.EnrollOptions) (*agent.Identity, error) {
	if id, err := agent.Load(opts.Dir); err == nil {
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// A signed UKI carries the server and the CA fingerprint on its built-in
	// command line but no token (the image is public): it enrolls without one, by
	// operator approval or by MAC, as the server allows (--enroll-approval-without-token,
	// --enroll-by-mac); a server that allows neither refuses it.
	if opts.Server == "" || opts.CAFingerprint == "" {
		return nil, fmt.Errorf("not enrolled (no identity in %s) and no enrollment parameters: give --server, --ca-fingerprint and --join-token, or boot with kiln.server=, kiln.ca_fingerprint= and kiln.token=", opts.Dir)
	}
	if opts.OnPending == nil {
		// The profile enrolls by approval: the console says what the operator must do.
		opts.OnPending = func(p agentwire.EnrollPending) {
			log.Warn("enrollment waits for an operator: kiln enrollment approve "+p.ID, "enrollment", p.ID, "expires", p.ExpiresAt)
		}
	}
	backoff := agent.Backoff{Initial: time.Second, Max: 30 * time.Second}
	for n := 1; ; n++ {
		id, err := agent.Enroll(ctx, opts)
		if err == nil {
			return id, nil
		}
		var se *agent.ServerError
		if errors.As(err, &se) && se.Status < 500 && se.Status != http.StatusTooManyRequests {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d := backoff.Delay(n)
		log.Warn("enrollment failed; retrying", "attempt", n, "in", d.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(d):
		}
	}
}

func newAgentInitCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "init",
		Short:  "PID 1 of the agent environment: mounts, modules, network, then kiln agent run",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Getpid() != 1 {
				return errors.New("kiln agent init runs as PID 1 of the agent environment's initramfs")
			}
			return agent.RunInit(agent.InitOptions{
				Logger:    slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)).With("component", "init"),
				AgentArgs: []string{"agent", "run", "--dir", agent.DefaultDir},
			})
		},
	}
}

func newAgentFactsCmd() *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "facts",
		Short: "Print the facts the agent reports about this machine, as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f := agent.Facts()
			if root != "" && root != "/" {
				f = agent.MachineFacts(root)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(f)
		},
	}
	cmd.Flags().StringVar(&root, "root", "/", "read /sys and /proc under this directory (a copy of another machine's)")
	return cmd
}

func newAgentActionCmd() *cobra.Command {
	var (
		argsJSON, logLevel string
		timeout            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "action TYPE [KEY=VALUE ...]",
		Short: "Run one built-in action here, without Kiln (to try a template's action by hand)",
		Long: `Run one of the agent's built-in actions on this machine, with the same checks
as in a workflow (image2disk and partition write only to a whole, unused disk).
Arguments are KEY=VALUE pairs (strings) or a JSON object with --args-json, which
lists need (partition's partitions).`,
		Example: `  kiln agent action image2disk disk=/dev/sdb imageURL=http://10.0.0.2:8080/artifacts/debian-12 sha256=9f86d0...
  kiln agent action partition disk=/dev/sdb --args-json '{"partitions":[{"label":"esp","size":"512MiB","type":"esp"},{"label":"root"}]}'
  kiln agent action exec command='lsblk -J'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), "text", logLevel)
			if err != nil {
				return err
			}
			a := agent.Args{}
			if argsJSON != "" {
				if err := json.Unmarshal([]byte(argsJSON), &a); err != nil {
					return fmt.Errorf("--args-json: %w", err)
				}
			}
			for _, kv := range args[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("argument %q is not KEY=VALUE", kv)
				}
				a[k] = v
			}
			ctx, stop := signal.NotifyContext(cmdContext(cmd), os.Interrupt, syscall.SIGTERM)
			defer stop()
			msg, err := agent.RunLocal(ctx, nil, args[0], a, timeout, log)
			if err != nil {
				return fmt.Errorf("%s failed: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s succeeded: %s\n", args[0], msg)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&argsJSON, "args-json", "", "arguments as a JSON object (KEY=VALUE pairs override its keys)")
	f.DurationVar(&timeout, "timeout", 30*time.Minute, "the action's timeout")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// newImageCmd is `kiln image`: the agent environment's kernel and initramfs.
func newImageCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build the agent environment (kernel + initramfs) that profiles with boot.agent boot",
	}
	cmd.AddCommand(newImageBuildCmd(g))
	return cmd
}

func newImageBuildCmd(g *globalFlags) *cobra.Command {
	var (
		cfg                       image.Config
		modules, extra            []string
		kernelName, initrdName    string
		apply, strict, noProgress bool
		uki                       bool
		ukiOpts                   image.UKIOptions
	)
	cmd := &cobra.Command{
		Use:   "build --kernel PATH --out DIR",
		Short: "Build the in-memory agent environment from a kernel",
		Long: `Build the agent environment: OUT/vmlinuz (the kernel, copied) and
OUT/initramfs.cpio.gz (or .zst) holding busybox, this static kiln binary, the kernel
modules machines need (with their dependencies) and an init that loads them, brings
up the boot NIC with DHCP and runs kiln agent. The same inputs give the same bytes.

It prints the two Artifact objects (kiln-agent-kernel, kiln-agent-initrd) with their
sha256 as YAML for kiln apply -f -, or applies them itself with --apply. Build into
kiln serve's artifact directory so that it serves the files.

The kernel's modules are found beside it (an extracted kernel package: boot/vmlinuz-V
and lib/modules/V) or given with --modules-dir.

With --uki it also writes OUT/kiln-agent.efi, a Unified Kernel Image (systemd's EFI
stub + the kernel + the initramfs + --uki-cmdline + os-release) and its Artifact
kiln-agent-uki, for profiles with spec.boot.uki; with --secureboot-key and
--secureboot-cert it is signed (Authenticode, in Go, reproducibly) with that
Secure Boot db key. The key is read from its file and never logged.`,
		Example: `  apt-get download linux-image-amd64 && dpkg -x linux-image-*.deb /tmp/k
  kiln image build --kernel /tmp/k/boot/vmlinuz-* --out /var/lib/kiln/artifacts/agent --apply`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Kiln == "" {
				self, err := os.Executable()
				if err != nil || !image.IsStaticELF(self) {
					return errors.New("this kiln binary is not statically linked: build one with CGO_ENABLED=0 (make build) and pass --kiln-binary bin/kiln")
				}
				cfg.Kiln = self
			}
			if cmd.Flags().Changed("modules") {
				cfg.Modules = modules
				cfg.StrictModules = true
			}
			if len(extra) > 0 {
				base := cfg.Modules
				if base == nil {
					base = image.DefaultModules
				}
				cfg.Modules = append(append([]string{}, base...), extra...)
			}
			cfg.StrictModules = cfg.StrictModules || strict
			if uki {
				cfg.UKI = &ukiOpts
			} else if ukiOpts.SecureBootKey != "" || ukiOpts.SecureBootCert != "" || ukiOpts.Cmdline != "" {
				return errors.New("--secureboot-key, --secureboot-cert and --uki-cmdline need --uki")
			}
			errOut := cmd.ErrOrStderr()
			bar := newProgressBar(errOut, !noProgress)
			cfg.Progress = bar.update
			res, err := image.Build(cmdContext(cmd), cfg)
			bar.finish()
			if err != nil {
				return err
			}
			if len(res.Missing) > 0 {
				fmt.Fprintf(errOut, "note: modules not in this kernel, left out: %s\n", strings.Join(res.Missing, ", "))
			}
			for _, n := range res.Notes {
				fmt.Fprintf(errOut, "note: %s\n", n)
			}
			man := res.Manifest(kernelName, initrdName)
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "# kiln image build: kernel %s, %d modules, %s\n", res.KernelVersion, len(res.Modules), cfg.Compression)
			fmt.Fprintf(out, "# %s  %s  %d bytes\n", res.Kernel.SHA256, res.Kernel.Path, res.Kernel.Size)
			fmt.Fprintf(out, "# %s  %s  %d bytes\n", res.Initrd.SHA256, res.Initrd.Path, res.Initrd.Size)
			if res.UKI != nil {
				signed := "unsigned"
				if ukiOpts.SecureBootKey != "" {
					signed = "signed for Secure Boot"
				}
				fmt.Fprintf(out, "# %s  %s  %d bytes (%s)\n", res.UKI.SHA256, res.UKI.Path, res.UKI.Size, signed)
			}
			fmt.Fprint(out, man)
			if !apply {
				return nil
			}
			return applyManifest(cmdContext(cmd), g, errOut, man)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Kernel, "kernel", "", "kernel image (bzImage) to boot; required")
	f.StringVar(&cfg.ModulesDir, "modules-dir", "", "the kernel's module tree (lib/modules/<version>, or a directory of .ko files); default: found beside --kernel")
	f.StringSliceVar(&modules, "modules", nil, "modules to include, with their dependencies, replacing the default list (each must exist or be built in) (default "+strings.Join(image.DefaultModules, ",")+")")
	f.StringSliceVar(&extra, "extra-modules", nil, "modules to include besides the list")
	f.BoolVar(&strict, "strict-modules", false, "fail when a module of the list is not in the kernel")
	f.StringVar(&cfg.Busybox, "busybox", "/bin/busybox", "static busybox (Debian: busybox-static)")
	f.StringVar(&cfg.Kiln, "kiln-binary", "", "static kiln binary to put in the image (default: this one, if static)")
	f.StringVar(&cfg.Compression, "compression", image.Gzip, "initramfs compression: gzip or zstd")
	f.StringVar(&cfg.OutDir, "out", "", "output directory; required")
	f.StringVar(&kernelName, "kernel-artifact", image.KernelArtifact, "name of the kernel's Artifact")
	f.StringVar(&initrdName, "initrd-artifact", image.InitrdArtifact, "name of the initramfs's Artifact")
	f.BoolVar(&apply, "apply", false, "apply the Artifact objects through the API (--server, --token)")
	f.BoolVar(&uki, "uki", false, "also build OUT/kiln-agent.efi, a Unified Kernel Image of the agent, and its Artifact "+image.UKIArtifact)
	f.StringVar(&ukiOpts.Cmdline, "uki-cmdline", "", "kernel command line built into the UKI (kiln.server=URL kiln.ca_fingerprint=HEX console=...)")
	f.StringVar(&ukiOpts.Stub, "uki-stub", image.DefaultEFIStub, "systemd's EFI stub (Debian: systemd-boot-efi)")
	f.StringVar(&ukiOpts.SecureBootKey, "secureboot-key", "", "Secure Boot db private key (PEM, RSA, unencrypted) to sign the UKI with")
	f.StringVar(&ukiOpts.SecureBootCert, "secureboot-cert", "", "certificate (PEM) of --secureboot-key, as enrolled in the firmware's db")
	f.BoolVar(&noProgress, "no-progress", false, "no progress bar (it is shown only on a terminal anyway)")
	cmd.MarkFlagRequired("kernel")
	cmd.MarkFlagRequired("out")
	return cmd
}

func applyManifest(ctx context.Context, g *globalFlags, errOut io.Writer, man string) error {
	objs, err := resource.ParseManifests(strings.NewReader(man), "kiln image build")
	if err != nil {
		return err
	}
	raws := make([]json.RawMessage, len(objs))
	for i, o := range objs {
		raws[i], _ = json.Marshal(o)
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	var resp api.ApplyResponse
	if err := c.do(ctx, http.MethodPost, "/api/v1/apply", nil, api.ApplyRequest{Objects: raws}, &resp); err != nil {
		return err
	}
	for _, r := range resp.Results {
		fmt.Fprintf(errOut, "%s/%s %s\n", strings.ToLower(r.Kind), r.Name, r.Outcome)
	}
	return nil
}

// progressBar draws a one-line bar on a terminal; elsewhere it is silent.
type progressBar struct {
	w     io.Writer
	on    bool
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

func newProgressBar(w io.Writer, want bool) *progressBar {
	on := false
	if f, ok := w.(*os.File); ok && want {
		on = isatty.IsTerminal(f.Fd())
	}
	return &progressBar{w: w, on: on}
}

func (p *progressBar) update(stage string, done, total int64) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = time.Now()
	const width = 30
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	n := int(frac * width)
	fmt.Fprintf(p.w, "\r%-10s [%s%s] %3.0f%% %.1f/%.1f MiB", stage, strings.Repeat("#", n), strings.Repeat(".", width-n),
		frac*100, float64(done)/(1<<20), float64(total)/(1<<20))
	p.drawn = true
}

func (p *progressBar) finish() {
	if p.on && p.drawn {
		fmt.Fprintln(p.w)
	}
}
