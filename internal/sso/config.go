// Package sso signs people in to Kiln's web console with OpenID Connect: the
// authorization code flow with PKCE against the company's identity provider, the
// provider's groups mapped to Kiln's roles, and browser sessions (an HttpOnly
// cookie naming a server-side session, with a CSRF token every write must carry).
// API tokens stay the way automation authenticates; a session is for a person.
package sso

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/role"
)

// Config is the `oidc:` section of kiln.yaml.
type Config struct {
	// Issuer is the provider's issuer URL; its discovery document is read at start.
	Issuer string `yaml:"issuer"`
	// ClientID and ClientSecretFile are Kiln's client at the provider; the secret
	// is read from a file so that it is never a flag or an environment variable.
	ClientID         string `yaml:"clientID"`
	ClientSecretFile string `yaml:"clientSecretFile"`
	// RedirectURL is Kiln's /ui/callback as the browser reaches it.
	RedirectURL string `yaml:"redirectURL"`
	// Scopes asked for; "openid" is always among them. Default: openid, email,
	// profile, groups.
	Scopes []string `yaml:"scopes"`
	// RoleClaim is the claim holding the person's groups (default "groups").
	RoleClaim string `yaml:"roleClaim"`
	// Roles maps each Kiln role to the groups that get it; a person in groups of
	// several roles gets the highest; a person in none is refused.
	Roles map[string][]string `yaml:"roles"`
	// SessionTTL is how long a console session lasts (default 8h).
	SessionTTL time.Duration `yaml:"sessionTTL"`
	// CLIClientID is the public client `kiln login` uses (PKCE with a loopback
	// redirect); empty: ClientID.
	CLIClientID string `yaml:"cliClientID"`
}

// DefaultSessionTTL is a working day: a console left open overnight asks again.
const DefaultSessionTTL = 8 * time.Hour

// Enabled reports whether single sign-on is configured at all.
func (c Config) Enabled() bool { return c.Issuer != "" }

// withDefaults fills what Validate allows to be left out.
func (c Config) withDefaults() Config {
	c.RoleClaim = cmp.Or(c.RoleClaim, "groups")
	c.SessionTTL = cmp.Or(c.SessionTTL, DefaultSessionTTL)
	if len(c.Scopes) == 0 {
		c.Scopes = []string{"openid", "email", "profile", "groups"}
	}
	if !slices.Contains(c.Scopes, "openid") {
		c.Scopes = append([]string{"openid"}, c.Scopes...)
	}
	c.CLIClientID = cmp.Or(c.CLIClientID, c.ClientID)
	return c
}

// Validate checks the section, naming the field at fault.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	if u, err := url.Parse(c.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("oidc.issuer: %q is not an http(s) URL", c.Issuer))
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("oidc.clientID: required"))
	}
	if u, err := url.Parse(c.RedirectURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || !strings.HasSuffix(u.Path, "/ui/callback") {
		errs = append(errs, fmt.Errorf("oidc.redirectURL: %q is not an http(s) URL ending in /ui/callback", c.RedirectURL))
	}
	if c.RoleClaim != "" && strings.TrimSpace(c.RoleClaim) != c.RoleClaim {
		errs = append(errs, fmt.Errorf("oidc.roleClaim: %q has surrounding spaces", c.RoleClaim))
	}
	if c.SessionTTL < 0 {
		errs = append(errs, fmt.Errorf("oidc.sessionTTL: %s is negative", c.SessionTTL))
	}
	if len(c.Roles) == 0 {
		errs = append(errs, errors.New("oidc.roles: map at least one group to admin, operator or viewer; without it nobody can sign in"))
	}
	for r, groups := range c.Roles {
		if r != role.Admin && r != role.Operator && r != role.Viewer {
			errs = append(errs, fmt.Errorf("oidc.roles.%s: not a role (admin, operator, viewer)", r))
		}
		for i, g := range groups {
			if g == "" {
				errs = append(errs, fmt.Errorf("oidc.roles.%s[%d]: empty group name", r, i))
			}
		}
	}
	return errors.Join(errs...)
}

// clientSecret reads ClientSecretFile ("" without one: a public client).
func (c Config) clientSecret() (string, error) {
	if c.ClientSecretFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.ClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("oidc.clientSecretFile: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("oidc.clientSecretFile %s: empty", c.ClientSecretFile)
	}
	return s, nil
}
