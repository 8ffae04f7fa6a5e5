package agentwire

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os/exec"
	"strings"
	"testing"
)

// The CSR ChannelBoundCSR makes is a valid PKCS #10 request to crypto/x509 and to openssl,
// with the channel binding in its challengePassword.
func TestChannelBoundCSR(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	binding := bytes.Repeat([]byte{0xab}, 32)
	csr, err := ChannelBoundCSR(key, binding)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(csr))
	req, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := req.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(req.PublicKey) || len(req.Subject.Names) != 0 || len(req.DNSNames) != 0 {
		t.Fatalf("request %+v", req)
	}
	cmd := exec.Command("openssl", "req", "-verify", "-noout", "-text")
	cmd.Stdin = strings.NewReader(csr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req -verify: %v\n%s", err, out)
	}
	want := "challengePassword        :tls-exporter:" + base64.StdEncoding.EncodeToString(binding)
	if !strings.Contains(string(out), "verify OK") || !strings.Contains(string(out), want) {
		t.Fatalf("openssl req -verify -text:\n%s", out)
	}
}
