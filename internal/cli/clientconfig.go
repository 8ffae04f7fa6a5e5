package cli

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kilnhq/kiln/internal/atomicfile"
	"github.com/kilnhq/kiln/internal/enroll"
)

// The client configuration, like a kubeconfig: named contexts, each a server with
// its CA pin and credentials, and the current one. It lives in
// <user config dir>/kiln/config.yaml ($XDG_CONFIG_HOME, else ~/.config) or where
// --client-config / KILN_CLIENT_CONFIG says. (KILN_CONFIG is `kiln serve --config`'s
// variable, the server's settings; one variable for two files would let a shell
// that exports it for the server break every CLI command.)
//
// Each setting is taken, first match: the flag, its KILN_* variable, the context,
// then the defaults (the data dir's server.url, ca.crt and admin.token on the
// server's own host, a server found by DNS SRV, http://127.0.0.1:8080). An
// explicit --data-dir (or KILN_DATA_DIR) counts as a flag: its server wins over the
// context, as the user named that server.

// ClientConfigFile is the client configuration's name under <user config dir>/kiln.
const ClientConfigFile = "config.yaml"

// clientConfig is the file's content.
type clientConfig struct {
	CurrentContext string          `yaml:"current-context,omitempty"`
	Contexts       []clientContext `yaml:"contexts,omitempty"`
}

// clientContext is one named server. A token in the file is allowed (the file is
// written with mode 0600) but token-file keeps it out of the config.
type clientContext struct {
	Name          string `yaml:"name"`
	Server        string `yaml:"server,omitempty"`
	CAFingerprint string `yaml:"ca-fingerprint,omitempty"`
	TokenFile     string `yaml:"token-file,omitempty"`
	Token         string `yaml:"token,omitempty"`
	// Auth is how the context authenticates: "token" (the default: token or
	// token-file). "oidc" is reserved for a login flow Kiln does not have yet.
	Auth string `yaml:"auth,omitempty"`
	// DNSDomain: with no server, look up _kiln._tcp.<dns-domain>.
	DNSDomain string `yaml:"dns-domain,omitempty"`
}

// Auth methods of a context.
const (
	authToken = "token"
	authOIDC  = "oidc"
)

var contextNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._@-]{0,62}[A-Za-z0-9])?$`)

// clientConfigPath is the file in use: the flag (or its variable), else the default.
func clientConfigPath(g *globalFlags) (string, error) {
	if g.clientConfig != "" {
		return g.clientConfig, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("client config: no user config dir (set XDG_CONFIG_HOME or HOME, or pass --client-config): %w", err)
	}
	return filepath.Join(d, "kiln", ClientConfigFile), nil
}

// loadClientConfig reads and validates the file; a missing file is an empty config.
func loadClientConfig(path string) (*clientConfig, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &clientConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read client config: %w", err)
	}
	cfg, err := parseClientConfig(b)
	if err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	return cfg, nil
}

// parseClientConfig decodes strictly (an unknown key is a typo worth reporting) and
// validates every context; errors name the field.
func parseClientConfig(b []byte) (*clientConfig, error) {
	cfg := &clientConfig{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return nil, err
	}
	seen := map[string]bool{}
	for i := range cfg.Contexts {
		c := &cfg.Contexts[i]
		if err := c.validate(); err != nil {
			return nil, fmt.Errorf("contexts[%d]: %w", i, err)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("contexts[%d].name: %q is defined twice", i, c.Name)
		}
		seen[c.Name] = true
	}
	if cfg.CurrentContext != "" && !seen[cfg.CurrentContext] {
		return nil, fmt.Errorf("current-context: %q is not one of the contexts", cfg.CurrentContext)
	}
	return cfg, nil
}

func (c *clientContext) validate() error {
	if !contextNameRE.MatchString(c.Name) {
		return fmt.Errorf("name: %q is not a context name (letters, digits, '.', '_', '@', '-'; at most 64)", c.Name)
	}
	if c.Server != "" {
		u, err := url.Parse(c.Server)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("context %q: server: %q is not an http:// or https:// URL", c.Name, c.Server)
		}
	}
	if c.CAFingerprint != "" {
		fp, err := enroll.NormalizeFingerprint(c.CAFingerprint)
		if err != nil {
			return fmt.Errorf("context %q: ca-fingerprint: %w", c.Name, err)
		}
		c.CAFingerprint = fp
	}
	switch c.Auth {
	case "", authToken, authOIDC:
	default:
		return fmt.Errorf("context %q: auth: %q is not one of %s, %s", c.Name, c.Auth, authToken, authOIDC)
	}
	if c.Token != "" && c.TokenFile != "" {
		return fmt.Errorf("context %q: token and token-file: set one, not both", c.Name)
	}
	if c.DNSDomain != "" && strings.ContainsAny(c.DNSDomain, " /:") {
		return fmt.Errorf("context %q: dns-domain: %q is not a DNS domain", c.Name, c.DNSDomain)
	}
	return nil
}

// context returns the named context, or nil for "" (none).
func (cfg *clientConfig) context(name string) *clientContext {
	if name == "" {
		return nil
	}
	i := slices.IndexFunc(cfg.Contexts, func(c clientContext) bool { return c.Name == name })
	if i < 0 {
		return nil
	}
	return &cfg.Contexts[i]
}

func (cfg *clientConfig) names() []string {
	var out []string
	for _, c := range cfg.Contexts {
		out = append(out, c.Name)
	}
	return out
}

// saveClientConfig writes the file atomically with mode 0600 (it may hold a token).
func saveClientConfig(path string, cfg *clientConfig) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write client config: %w", err)
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return fmt.Errorf("encode client config: %w", err)
	}
	enc.Close()
	if err := atomicfile.Write(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write client config %s: %w", path, err)
	}
	return nil
}

// activeContext is the context the command uses: --context (KILN_CONTEXT), else the
// file's current-context, else none. A named context that does not exist is an
// error; so is one whose authentication Kiln cannot do.
func activeContext(g *globalFlags) (*clientContext, error) {
	path, err := clientConfigPath(g)
	if err != nil {
		if g.contextName == "" {
			return nil, nil // no config dir: no config, no context
		}
		return nil, err
	}
	cfg, err := loadClientConfig(path)
	if err != nil {
		return nil, err
	}
	name := cmp.Or(g.contextName, cfg.CurrentContext)
	if name == "" {
		return nil, nil
	}
	c := cfg.context(name)
	if c == nil {
		return nil, fmt.Errorf("--context: %q is not a context in %s (kiln config get-contexts lists them: %s)", name, path, strings.Join(cfg.names(), ", "))
	}
	if c.Auth == authOIDC {
		return nil, fmt.Errorf("context %q: auth: oidc is not configured: OIDC login is reserved for a later Kiln; use token-file (kiln config set-context %s --token-file FILE --auth token)", c.Name, c.Name)
	}
	return c, nil
}

// contextToken reads the context's token: token-file (relative to the config
// file's directory when not absolute), else token.
func contextToken(g *globalFlags, c *clientContext) (string, error) {
	if c.TokenFile == "" {
		return c.Token, nil
	}
	p := c.TokenFile
	if !filepath.IsAbs(p) {
		if cp, err := clientConfigPath(g); err == nil {
			p = filepath.Join(filepath.Dir(cp), p)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("context %q: token-file: %w", c.Name, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("context %q: token-file %s is empty", c.Name, p)
	}
	return tok, nil
}
