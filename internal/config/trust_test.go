package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func testCAPEM(t *testing.T) []byte {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Kiln CA test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ignitionCAs returns the PEMs an Ignition config trusts.
func ignitionCAs(t *testing.T, out []byte) []string {
	t.Helper()
	var doc struct {
		Ignition struct {
			Security struct {
				TLS struct {
					CertificateAuthorities []struct {
						Source string `json:"source"`
					} `json:"certificateAuthorities"`
				} `json:"tls"`
			} `json:"security"`
		} `json:"ignition"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	var pems []string
	for _, c := range doc.Ignition.Security.TLS.CertificateAuthorities {
		body, ok := strings.CutPrefix(c.Source, "data:,")
		if !ok {
			t.Fatalf("source %q is not a data URL", c.Source)
		}
		p, err := url.PathUnescape(body)
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, p)
	}
	return pems
}

func TestAddCAIgnition(t *testing.T) {
	ca, other := testCAPEM(t), testCAPEM(t)
	other64 := pemDataURL(other)
	for name, in := range map[string]string{
		"bare":          `{"ignition":{"version":"3.3.0"}}`,
		"with files":    `{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/x","mode":420,"contents":{"source":"data:,a%3Cb"}}]}}`,
		"another CA":    `{"ignition":{"version":"3.3.0","security":{"tls":{"certificateAuthorities":[{"source":"` + other64 + `"}]}}}}`,
		"empty tls":     `{"ignition":{"version":"3.0.0","security":{"tls":{}}}}`,
		"already there": `{"ignition":{"version":"3.3.0","security":{"tls":{"certificateAuthorities":[{"source":"` + pemDataURL(ca) + `"}]}}}}`,
	} {
		out, err := AddCA(Target{Kind: KindIgnition}, []byte(in), ca)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := ValidateIgnition(out); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		pems := ignitionCAs(t, out)
		n := 0
		for _, p := range pems {
			if p == string(ca) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: Kiln's CA listed %d times in %s", name, n, out)
		}
		if name == "another CA" && (len(pems) != 2 || pems[0] != string(other)) {
			t.Errorf("%s: the operator's CA was lost: %s", name, out)
		}
		if name == "with files" && !strings.Contains(string(out), `"mode":420`) || strings.Contains(string(out), `\u003c`) {
			t.Errorf("%s: the rest of the config changed: %s", name, out)
		}
		if p, err := exec.LookPath("ignition-validate"); err == nil {
			f := filepath.Join(t.TempDir(), "c.ign")
			os.WriteFile(f, out, 0o600)
			if o, err := exec.Command(p, f).CombinedOutput(); err != nil {
				t.Errorf("%s: ignition-validate: %v\n%s\n%s", name, err, o, out)
			}
		}
	}
	if _, err := AddCA(Target{Kind: KindIgnition}, []byte(`{"ignition":{"version":"3.3.0","security":{"tls":{"certificateAuthorities":"x"}}}}`), ca); err == nil {
		t.Error("certificateAuthorities not a list: accepted")
	}
}

func TestAddCACloudConfig(t *testing.T) {
	ca, other := testCAPEM(t), testCAPEM(t)
	otherIndented := "    " + strings.ReplaceAll(strings.TrimSpace(string(other)), "\n", "\n    ")
	for name, in := range map[string]string{
		"bare":       "#cloud-config\n",
		"hostname":   "#cloud-config\n# set by Kiln\nhostname: web-1\nruncmd:\n  - [echo, hi]\n",
		"another CA": "#cloud-config\nca_certs:\n  remove_defaults: false\n  trusted:\n  - |\n" + otherIndented + "\n",
		"null":       "#cloud-config\nca_certs:\n",
	} {
		out, err := AddCA(Target{Kind: KindCloudInit, Part: "user-data"}, []byte(in), ca)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := ValidateCloudInit("user-data", out); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		var doc struct {
			Hostname string `yaml:"hostname"`
			CACerts  struct {
				Trusted []string `yaml:"trusted"`
			} `yaml:"ca_certs"`
		}
		if err := yaml.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		tr := doc.CACerts.Trusted
		if len(tr) == 0 || strings.TrimSpace(tr[len(tr)-1]) != strings.TrimSpace(string(ca)) {
			t.Errorf("%s: Kiln's CA not in ca_certs.trusted:\n%s", name, out)
		}
		if name == "another CA" && (len(tr) != 2 || strings.TrimSpace(tr[0]) != strings.TrimSpace(string(other))) {
			t.Errorf("%s: the operator's CA was lost:\n%s", name, out)
		}
		if name == "hostname" && doc.Hostname != "web-1" {
			t.Errorf("%s: hostname lost:\n%s", name, out)
		}
		again, err := AddCA(Target{Kind: KindCloudInit, Part: "user-data"}, out, ca)
		if err != nil || strings.Count(string(again), "BEGIN CERTIFICATE") != strings.Count(string(out), "BEGIN CERTIFICATE") {
			t.Errorf("%s: adding twice lists it twice (%v):\n%s", name, err, again)
		}
		if p, err := exec.LookPath("cloud-init"); err == nil {
			f := filepath.Join(t.TempDir(), "user-data")
			os.WriteFile(f, out, 0o600)
			if o, err := exec.Command(p, "schema", "--config-file", f).CombinedOutput(); err != nil || !strings.Contains(string(o), "Valid cloud-config") {
				t.Errorf("%s: cloud-init schema: %v\n%s\n%s", name, err, o, out)
			}
		}
	}
	// Not a cloud-config: left alone.
	for _, tc := range []struct {
		target Target
		in     string
	}{
		{Target{Kind: KindCloudInit, Part: "user-data"}, "#!/bin/sh\necho hi\n"},
		{Target{Kind: KindCloudInit, Part: "meta-data"}, "instance-id: x\n"},
		{Target{Kind: KindFile, Part: "ks.cfg"}, "text\n"},
	} {
		out, err := AddCA(tc.target, []byte(tc.in), ca)
		if err != nil || string(out) != tc.in {
			t.Errorf("%s: changed to %q (%v)", tc.target, out, err)
		}
	}
	if _, err := AddCA(Target{Kind: KindCloudInit, Part: "user-data"}, []byte("#cloud-config\nca_certs: [1]\n"), ca); err == nil {
		t.Error("ca_certs a list: accepted")
	}
}
