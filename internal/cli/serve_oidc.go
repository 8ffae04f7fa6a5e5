package cli

import (
	"bytes"
	"cmp"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/kilnhq/kiln/internal/sso"
)

// oidcConfigKey is the config file's section for single sign-on: a map (the
// roles' groups), where every other key of the file is one flag.
const oidcConfigKey = "oidc"

// oidcConfig reads the oidc: section of the config file (if any) and lets the
// --oidc-* flags (or KILN_OIDC_* variables) override its scalar fields.
func oidcConfig(path string, flags sso.Config) (sso.Config, error) {
	var cfg sso.Config
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config file: %w", err)
		}
		var file struct {
			OIDC yaml.Node `yaml:"oidc"`
		}
		if err := yaml.Unmarshal(data, &file); err != nil {
			return cfg, fmt.Errorf("config file %s: %v", path, err)
		}
		if !file.OIDC.IsZero() {
			raw, err := yaml.Marshal(&file.OIDC)
			if err != nil {
				return cfg, fmt.Errorf("config file %s: oidc: %v", path, err)
			}
			dec := yaml.NewDecoder(bytes.NewReader(raw))
			dec.KnownFields(true)
			if err := dec.Decode(&cfg); err != nil {
				return cfg, fmt.Errorf("config file %s: oidc: %v", path, err)
			}
		}
	}
	cfg.Issuer = cmp.Or(flags.Issuer, cfg.Issuer)
	cfg.ClientID = cmp.Or(flags.ClientID, cfg.ClientID)
	cfg.ClientSecretFile = cmp.Or(flags.ClientSecretFile, cfg.ClientSecretFile)
	cfg.RedirectURL = cmp.Or(flags.RedirectURL, cfg.RedirectURL)
	return cfg, nil
}
