package cli_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"
)

// upgradeManifests: an A/B template trusting the key that signed the root hash in
// internal/verity/testdata (openssl smime), one trusting another key, the images.
func upgradeManifests(t *testing.T) string {
	t.Helper()
	sig, err := os.ReadFile("../verity/testdata/roothash-noattr.p7s")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := os.ReadFile("../verity/testdata/signer.pem")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "another key"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	indent := func(b []byte) string {
		return "          " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n          ")
	}
	return strings.NewReplacer("SIG", base64.StdEncoding.EncodeToString(sig), "TRUSTED", indent(cert),
		"OTHER", indent(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))).Replace(`
kind: Artifact
metadata: {name: os-v1-verity}
spec: {source: os-v1.verity, sha256: "1111111111111111111111111111111111111111111111111111111111111111"}
---
kind: Artifact
metadata: {name: os-v1}
spec:
  source: os-v1.raw
  sha256: "2222222222222222222222222222222222222222222222222222222222222222"
  verity: {hashTree: os-v1-verity, rootHash: "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01", rootHashSignature: "SIG"}
---
kind: Artifact
metadata: {name: os-plain}
spec: {source: plain.raw, sha256: "3333333333333333333333333333333333333333333333333333333333333333"}
---
kind: Template
metadata: {name: ab}
spec:
  actions:
    - name: slot
      type: image2slot
      args:
        disk: /dev/vda
        image: os-v1
        linux: /vmlinuz
        trustedCerts: |
TRUSTED
    - {name: reboot, type: reboot}
---
kind: Template
metadata: {name: ab-other-key}
spec:
  actions:
    - name: slot
      type: image2slot
      args:
        disk: /dev/vda
        image: os-v1
        linux: /vmlinuz
        trustedCerts: |
OTHER
---
kind: Profile
metadata: {name: ab}
spec: {boot: {agent: true}, workflow: ab}
---
kind: Machine
metadata: {name: ab-1}
spec: {profile: ab, interfaces: [{mac: "52:54:00:00:0a:01"}]}
`)
}

// TestMachineUpgradeThroughCLI: kiln machine upgrade against a real server: the
// workflow writes the inactive slot with the image's verity arguments, and is
// audited; an image without verity, a template whose keys did not sign it and a
// missing --image are refused. Apply refuses an A/B layout that cannot work and a
// private key given as trustedCerts, naming the field, writing nothing.
func TestMachineUpgradeThroughCLI(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	s.MustKiln(upgradeManifests(t), "apply", "-f", "-")

	out := s.MustKiln("", "machine", "upgrade", "ab-1", "--image", "os-v1", "--no-power")
	if !strings.Contains(out, "machine/ab-1 upgrading to os-v1 in slot a: workflow ab-1-") || !strings.Contains(out, "(2 actions)") {
		t.Fatalf("upgrade: %s", out)
	}
	wf := s.MustKiln("", "describe", "machine", "ab-1")
	if !strings.Contains(wf, "slot") || !strings.Contains(wf, "image2slot") {
		t.Errorf("describe machine lacks the image2slot action:\n%s", wf)
	}
	if audit := s.MustKiln("", "audit", "list"); !strings.Contains(audit, "upgrade") {
		t.Errorf("the upgrade is not audited:\n%s", audit)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--image", "os-plain"}, `artifact "os-plain" has no spec.verity`},
		{[]string{"--image", "os-v1", "--template", "ab-other-key"}, "signed by a key that is not trusted"},
		{nil, "--image: required"},
		{[]string{"--image", "nope"}, `artifact "nope"`},
	} {
		_, err := s.Kiln("", append([]string{"machine", "upgrade", "ab-1", "--no-power"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("upgrade %v: %v, want %q", c.args, err, c.want)
		}
	}

	for _, c := range []struct{ manifest, want string }{
		{`kind: Template
metadata: {name: bad-layout}
spec:
  actions:
    - name: layout
      type: partition
      args:
        disk: {minSize: 2G}
        partitions:
          - {label: esp, size: 64MiB, type: esp}
          - {label: root-a, size: 1G}
          - {label: root-a-verity, size: 16MiB}
          - {label: root-b, size: 1G}
          - {label: root-b-verity, size: 16MiB}
`, `spec.actions[0] (layout).args.partitions: does not fit the 2.00 GiB disk (args.disk.minSize)`},
		{`kind: Template
metadata: {name: key-as-cert}
spec:
  actions:
    - name: slot
      type: image2slot
      args:
        disk: /dev/vda
        image: os-v1
        trustedCerts: "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"
`, "args.trustedCerts: PEM block 1 is a PRIVATE KEY, not a CERTIFICATE"},
	} {
		_, err := s.Kiln(c.manifest, "apply", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("apply: %v, want %q", err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("the refusal echoes the key: %v", err)
		}
	}
	if out := s.MustKiln("", "get", "templates", "-o", "name"); strings.Contains(out, "bad-layout") || strings.Contains(out, "key-as-cert") {
		t.Errorf("a refused template was written: %s", out)
	}
}
