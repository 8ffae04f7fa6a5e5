package cli

import (
	"strings"
	"testing"
)

func TestParseClientConfigErrorsNameTheField(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	cases := []struct{ name, doc, want string }{
		{"unknown key", "contexts:\n- name: a\n  sever: https://k:8443\n", "field sever not found"},
		{"bad name", "contexts:\n- name: 'a b'\n", `contexts[0]: name: "a b" is not a context name`},
		{"bad server", "contexts:\n- name: a\n  server: ftp://k\n", `context "a": server: "ftp://k" is not an http:// or https:// URL`},
		{"server without host", "contexts:\n- name: a\n  server: https://\n", `context "a": server:`},
		{"bad fingerprint", "contexts:\n- name: a\n  ca-fingerprint: zz\n", `context "a": ca-fingerprint:`},
		{"bad auth", "contexts:\n- name: a\n  auth: saml\n", `context "a": auth: "saml" is not one of token, oidc`},
		{"token and file", "contexts:\n- name: a\n  token: x\n  token-file: f\n", `context "a": token and token-file: set one, not both`},
		{"duplicate", "contexts:\n- name: a\n- name: a\n", `contexts[1].name: "a" is defined twice`},
		{"dangling current", "current-context: b\ncontexts:\n- name: a\n", `current-context: "b" is not one of the contexts`},
		{"bad domain", "contexts:\n- name: a\n  dns-domain: 'a b'\n", `context "a": dns-domain:`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseClientConfig([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
	cfg, err := parseClientConfig([]byte("current-context: lab\ncontexts:\n- name: lab\n  server: https://kiln.lab.test:8443\n  ca-fingerprint: 'SHA256:" + strings.ToUpper(fp) + "'\n  token-file: lab.token\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.context("lab"); c == nil || c.CAFingerprint != fp || c.TokenFile != "lab.token" {
		t.Errorf("parsed %+v, want the fingerprint normalized", cfg)
	}
	if cfg, err := parseClientConfig(nil); err != nil || len(cfg.Contexts) != 0 {
		t.Errorf("empty file: %+v %v", cfg, err)
	}
}

func FuzzParseClientConfig(f *testing.F) {
	f.Add([]byte("current-context: a\ncontexts:\n- name: a\n  server: https://k:8443\n  token-file: t\n"))
	f.Add([]byte("contexts: [{name: x, auth: oidc, dns-domain: lab.test}]"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := parseClientConfig(b)
		if err != nil {
			return
		}
		// What is accepted is valid: every context passes validate again, and the
		// current context exists.
		for i := range cfg.Contexts {
			if err := cfg.Contexts[i].validate(); err != nil {
				t.Fatalf("accepted context %d fails validation: %v", i, err)
			}
		}
		if cfg.CurrentContext != "" && cfg.context(cfg.CurrentContext) == nil {
			t.Fatalf("current-context %q accepted without a context", cfg.CurrentContext)
		}
	})
}
