package cli

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// newConfigCmd is `kiln config`: the client's named contexts (clientconfig.go).
// It edits only the user's own client file, never the server's state.
func newConfigCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Named contexts (server, CA fingerprint, token) in the client's config.yaml, like kubeconfig",
		Long: `Manage the client configuration: named contexts, each a server, the SHA-256
fingerprint of its CA and an API token (token-file), and the current context.
The file is <user config dir>/kiln/config.yaml ($XDG_CONFIG_HOME/kiln/config.yaml,
else ~/.config/kiln/config.yaml), or --client-config (env KILN_CLIENT_CONFIG).

Each setting comes from, first match: the flag, its KILN_* variable, the context
(--context, env KILN_CONTEXT, else current-context), then the defaults.`,
	}
	cmd.AddCommand(newGetContextsCmd(g), newCurrentContextCmd(g), newUseContextCmd(g), newSetContextCmd(g),
		newDeleteContextCmd(g), newConfigViewCmd(g))
	return cmd
}

func newGetContextsCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts; * marks the current one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, cfg, err := readClientConfig(g)
			if err != nil {
				return err
			}
			if len(cfg.Contexts) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "No contexts in %s (kiln config set-context NAME --server URL ...).\n", path)
				return nil
			}
			current := cfg.CurrentContext
			if g.contextName != "" {
				current = g.contextName
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "CURRENT\tNAME\tSERVER\tAUTH")
			for _, c := range cfg.Contexts {
				mark := ""
				if c.Name == current {
					mark = "*"
				}
				server := c.Server
				if server == "" && c.DNSDomain != "" {
					server = "(DNS SRV _kiln._tcp." + c.DNSDomain + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mark, c.Name, cmp.Or(server, "<none>"), authDescription(c))
			}
			return tw.Flush()
		},
	}
}

// authDescription names how a context authenticates, never the token itself.
func authDescription(c clientContext) string {
	switch {
	case c.Auth == authOIDC:
		return "oidc (not configured)"
	case c.TokenFile != "":
		return "token-file " + c.TokenFile
	case c.Token != "":
		return "token"
	}
	return "none"
}

func newCurrentContextCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "current-context",
		Short: "Print the current context's name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, cfg, err := readClientConfig(g)
			if err != nil {
				return err
			}
			if cfg.CurrentContext == "" {
				return fmt.Errorf("current-context: not set in %s (kiln config use-context NAME)", path)
			}
			fmt.Fprintln(cmd.OutOrStdout(), cfg.CurrentContext)
			return nil
		},
	}
}

func newUseContextCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "use-context NAME",
		Short: "Make NAME the current context",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, cfg, err := readClientConfig(g)
			if err != nil {
				return err
			}
			if cfg.context(args[0]) == nil {
				return fmt.Errorf("use-context: %q is not a context in %s (contexts: %s)", args[0], path, cmp.Or(strings.Join(cfg.names(), ", "), "none"))
			}
			cfg.CurrentContext = args[0]
			if err := saveClientConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Switched to context %q.\n", args[0])
			return nil
		},
	}
}

func newSetContextCmd(g *globalFlags) *cobra.Command {
	var (
		set        clientContext
		tokenStdin bool
	)
	cmd := &cobra.Command{
		Use:   "set-context NAME [--server URL] [--ca-fingerprint SHA256] [--token-file FILE | --token-stdin] [--auth token]",
		Short: "Create a context or change the settings given of an existing one",
		Long: `Create the context NAME, or change the settings given of an existing one (the
others are kept). A token is read from a file (--token-file, recommended: the
config then holds no secret) or from standard input (--token-stdin, stored in the
config, mode 0600), never from the command line, where other users' ps sees it.
An empty value (--server "") clears a setting.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, cfg, err := readClientConfig(g)
			if err != nil {
				return err
			}
			c := cfg.context(args[0])
			created := c == nil
			if created {
				cfg.Contexts = append(cfg.Contexts, clientContext{Name: args[0]})
				c = &cfg.Contexts[len(cfg.Contexts)-1]
			}
			fl := cmd.Flags()
			for name, dst := range map[string]*string{"server": &c.Server, "ca-fingerprint": &c.CAFingerprint,
				"token-file": &c.TokenFile, "auth": &c.Auth, "dns-domain": &c.DNSDomain} {
				if fl.Changed(name) {
					*dst = fl.Lookup(name).Value.String()
				}
			}
			if fl.Changed("token-file") {
				c.Token = ""
			}
			if tokenStdin {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<10))
				if err != nil {
					return fmt.Errorf("set-context %s: read the token from standard input: %w", c.Name, err)
				}
				if c.Token = strings.TrimSpace(string(b)); c.Token == "" {
					return fmt.Errorf("set-context %s: --token-stdin: standard input is empty", c.Name)
				}
				c.TokenFile = ""
			}
			if err := c.validate(); err != nil {
				return fmt.Errorf("set-context: %w", err)
			}
			if err := saveClientConfig(path, cfg); err != nil {
				return err
			}
			verb := "modified"
			if created {
				verb = "created"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Context %q %s.\n", c.Name, verb)
			return nil
		},
	}
	f := cmd.Flags()
	// These shadow the global --server and --ca-fingerprint: here they are what to
	// store, and never taken from KILN_SERVER or KILN_CA_FINGERPRINT.
	f.StringVar(&set.Server, "server", "", "the context's Kiln API URL (https://HOST:PORT)")
	f.StringVar(&set.CAFingerprint, "ca-fingerprint", "", "SHA-256 fingerprint of the server's CA (kiln ca show --fingerprint)")
	f.StringVar(&set.TokenFile, "token-file", "", "file holding the API token (relative: to the config file's directory)")
	f.BoolVar(&tokenStdin, "token-stdin", false, "read the API token from standard input and store it in the config")
	f.StringVar(&set.Auth, "auth", "", "authentication: token (default); oidc is reserved and not configured yet")
	f.StringVar(&set.DNSDomain, "dns-domain", "", "with no server: find it by DNS SRV _kiln._tcp.DOMAIN")
	f.VisitAll(func(fl *pflag.Flag) { setEnvName(fl, noEnv) })
	cmd.MarkFlagsMutuallyExclusive("token-file", "token-stdin")
	return cmd
}

func newDeleteContextCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete-context NAME",
		Short: "Delete a context (the current context is unset if it was NAME)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, cfg, err := readClientConfig(g)
			if err != nil {
				return err
			}
			if cfg.context(args[0]) == nil {
				return fmt.Errorf("delete-context: %q is not a context in %s", args[0], path)
			}
			kept := cfg.Contexts[:0]
			for _, c := range cfg.Contexts {
				if c.Name != args[0] {
					kept = append(kept, c)
				}
			}
			cfg.Contexts = kept
			if cfg.CurrentContext == args[0] {
				cfg.CurrentContext = ""
			}
			if err := saveClientConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Deleted context %q.\n", args[0])
			return nil
		},
	}
}

// redacted replaces a token in `kiln config view`.
const redacted = "REDACTED"

func newConfigViewCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "view",
		Short: "Print the client configuration, tokens redacted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, cfg, err := readClientConfig(g)
			if err != nil {
				return err
			}
			for i := range cfg.Contexts {
				if cfg.Contexts[i].Token != "" {
					cfg.Contexts[i].Token = redacted
				}
			}
			b, err := marshalYAML(cfg)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
}

// readClientConfig is the config file's path and content.
func readClientConfig(g *globalFlags) (string, *clientConfig, error) {
	path, err := clientConfigPath(g)
	if err != nil {
		return "", nil, err
	}
	cfg, err := loadClientConfig(path)
	if err != nil {
		return "", nil, err
	}
	return path, cfg, nil
}

var errNoContexts = errors.New("no contexts")
