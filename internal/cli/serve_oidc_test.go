package cli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/kilnhq/kiln/internal/sso"
)

func TestOIDCConfigSection(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kiln.yaml")
	os.WriteFile(path, []byte(`listen: 127.0.0.1:8080
oidc:
  issuer: https://sso.example.com
  clientID: kiln
  clientSecretFile: /etc/kiln/oidc-secret
  redirectURL: https://kiln.example.com/ui/callback
  sessionTTL: 2h
  roles:
    admin: [kiln-admins]
    viewer: [staff, interns]
`), 0o600)
	// The flat keys still bind to flags, the oidc section is skipped there.
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	listen := fs.String("listen", "", "")
	if err := bindConfigFile(fs, path); err != nil || *listen != "127.0.0.1:8080" {
		t.Fatalf("bindConfigFile: %v, listen %q", err, *listen)
	}
	cfg, err := oidcConfig(path, sso.Config{ClientID: "from-flag"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Issuer != "https://sso.example.com" || cfg.ClientID != "from-flag" || cfg.SessionTTL != 2*time.Hour ||
		!slices.Equal(cfg.Roles["viewer"], []string{"staff", "interns"}) || cfg.Validate() != nil {
		t.Errorf("oidc config %+v (validate: %v)", cfg, cfg.Validate())
	}

	os.WriteFile(path, []byte("oidc:\n  issuer: https://sso.example.com\n  clientId: kiln\n"), 0o600)
	if _, err := oidcConfig(path, sso.Config{}); err == nil || !strings.Contains(err.Error(), "clientId") {
		t.Errorf("a misspelt key: %v, want an error naming it", err)
	}
	if cfg, err := oidcConfig("", sso.Config{Issuer: "https://idp"}); err != nil || cfg.Issuer != "https://idp" {
		t.Errorf("flags alone: %+v %v", cfg, err)
	}
}
