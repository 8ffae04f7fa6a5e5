package verity_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/verity"
)

// signer is a key and self-signed certificate made by openssl.
type signer struct {
	key, cert string
}

func newSigner(t *testing.T, openssl, dir, name, keyAlg string) signer {
	t.Helper()
	s := signer{key: filepath.Join(dir, name+".key"), cert: filepath.Join(dir, name+".pem")}
	args := []string{"req", "-x509", "-new", "-nodes", "-days", "3650", "-subj", "/CN=" + name,
		"-keyout", s.key, "-out", s.cert}
	switch keyAlg {
	case "rsa":
		args = append(args, "-newkey", "rsa:2048")
	case "ec":
		args = append(args, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
	}
	if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	return s
}

// sign signs content as an operator would: openssl smime (the kernel's
// documented recipe) or cms, detached, DER.
func (s signer) sign(t *testing.T, openssl, content string, extra ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "roothash.txt"), filepath.Join(dir, "roothash.p7s")
	if err := os.WriteFile(in, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"smime", "-sign", "-nocerts", "-binary", "-in", in, "-inkey", s.key, "-signer", s.cert, "-outform", "der", "-out", out}, extra...)
	if o, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl smime -sign: %v\n%s", err, o)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVerifyRootHashSignature: signatures made by openssl smime over the root
// hash's hex text verify against the signer's certificate (RSA and ECDSA, with
// and without signed attributes); the same signature with another trusted key,
// over another root hash, or with one byte changed is refused.
func TestVerifyRootHashSignature(t *testing.T) {
	openssl := testkit.NeedTool(t, "openssl", "openssl")
	dir := t.TempDir()
	root := bytes.Repeat([]byte{0xab, 0x01}, 16)
	hexRoot := "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01"
	rsaS, ecS, otherS := newSigner(t, openssl, dir, "rsa-signer", "rsa"), newSigner(t, openssl, dir, "ec-signer", "ec"), newSigner(t, openssl, dir, "other", "rsa")
	load := func(s signer) []*x509.Certificate {
		b, err := os.ReadFile(s.cert)
		if err != nil {
			t.Fatal(err)
		}
		c, err := agentwire.ParseCertificatesPEM(b)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, c := range []struct {
		name  string
		s     signer
		extra []string
	}{
		{"rsa noattr", rsaS, []string{"-noattr"}},
		{"rsa signed attributes", rsaS, nil},
		{"ecdsa noattr", ecS, []string{"-noattr"}},
		{"ecdsa signed attributes sha384", ecS, []string{"-md", "sha384"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sig := c.s.sign(t, openssl, hexRoot, c.extra...)
			trusted := append(load(otherS), load(c.s)...)
			got, err := verity.VerifyRootHash(root, sig, trusted)
			if err != nil {
				t.Fatalf("verity.VerifyRootHash: %v", err)
			}
			if got.Subject.CommonName != filepath.Base(strings.TrimSuffix(c.s.cert, ".pem")) {
				t.Errorf("signer %q", got.Subject.CommonName)
			}
			if _, err := verity.VerifyRootHash(root, sig, load(otherS)); !errors.Is(err, verity.ErrUnknownSigner) {
				t.Errorf("only another key trusted: %v, want verity.ErrUnknownSigner", err)
			}
			other := bytes.Clone(root)
			other[31] ^= 1
			if _, err := verity.VerifyRootHash(other, sig, trusted); err == nil {
				t.Errorf("signature accepted for another root hash")
			}
			bad := bytes.Clone(sig)
			bad[len(bad)-10] ^= 1 // inside the signature value
			if _, err := verity.VerifyRootHash(root, bad, trusted); err == nil {
				t.Errorf("signature with a byte changed accepted")
			}
		})
	}
	// Signed over the hex with a newline (echo instead of printf): the kernel
	// would refuse it, so Kiln does too.
	sig := rsaS.sign(t, openssl, hexRoot+"\n", "-noattr")
	if _, err := verity.VerifyRootHash(root, sig, load(rsaS)); err == nil {
		t.Errorf("signature over the root hash with a trailing newline accepted")
	}
	if _, err := verity.VerifyRootHash(root, []byte("not der"), load(rsaS)); err == nil || !strings.Contains(err.Error(), "not DER PKCS#7") {
		t.Errorf("garbage: %v", err)
	}
}

// FuzzVerifyRootHash: any bytes as a signature are verified or refused, never a
// panic. The seeds are real openssl smime signatures (testdata, made once with the
// commands in testdata/README) of the root hash ab01...ab01.
func FuzzVerifyRootHash(f *testing.F) {
	pemData, err := os.ReadFile("testdata/signer.pem")
	if err != nil {
		f.Fatal(err)
	}
	trusted, err := agentwire.ParseCertificatesPEM(pemData)
	if err != nil {
		f.Fatal(err)
	}
	root := bytes.Repeat([]byte{0xab, 0x01}, 16)
	for _, name := range []string{"roothash-noattr.p7s", "roothash-attrs.p7s"} {
		sig, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := verity.VerifyRootHash(root, sig, trusted); err != nil {
			f.Fatalf("seed %s does not verify: %v", name, err)
		}
		f.Add(sig)
	}
	f.Fuzz(func(t *testing.T, sig []byte) {
		c, err := verity.VerifyRootHash(root, sig, trusted)
		if err == nil && c != trusted[0] {
			t.Fatalf("verified by %v, not the trusted certificate", c.Subject)
		}
	})
}
