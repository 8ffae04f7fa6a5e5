package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/pe"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// writeSecureBootKey writes an RSA db key and its self-signed certificate as an
// operator would have them (openssl req -x509 -newkey rsa:2048 ...).
func writeSecureBootKey(t testing.TB, dir, name string) (keyPath, certPath string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0x4b494c4e), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Unix(1700000000, 0), NotAfter: time.Unix(2000000000, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPath, certPath = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".crt")
	pk, _ := x509.MarshalPKCS8PrivateKey(key)
	writeFile(t, keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600)
	writeFile(t, certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return keyPath, certPath
}

// sbverify runs sbsigntool's verifier, the same code path as sbsign's.
func sbverify(t *testing.T, certPath, img string) (string, error) {
	t.Helper()
	out, err := exec.Command("sbverify", "--cert", certPath, img).CombinedOutput()
	return string(out), err
}

func needUKITools(t *testing.T) {
	testkit.NeedTool(t, "objcopy", "binutils")
	testkit.NeedTool(t, "sbverify", "sbsigntool")
	testkit.NeedFiles(t, DefaultEFIStub)
}

// TestBuildUKISigned: --uki with a db key gives a UKI that sbverify accepts with that
// certificate and refuses with another, whose sections carry the kernel, the
// initramfs, the command line and os-release; two builds are byte-identical.
func TestBuildUKISigned(t *testing.T) {
	needUKITools(t)
	root, kernel := fakePackage(t)
	busybox, kiln := fakeBinaries(t)
	keys := t.TempDir()
	key, cert := writeSecureBootKey(t, keys, "db")
	_, otherCert := writeSecureBootKey(t, keys, "other")
	const cmdline = "console=ttyS0 kiln.server=https://10.0.0.1:8443"
	var first []byte
	for i := range 2 {
		out := t.TempDir()
		res, err := Build(context.Background(), Config{
			Kernel: kernel, ModulesDir: filepath.Join(root, "lib", "modules", testKver), Busybox: busybox, Kiln: kiln, OutDir: out,
			Modules: []string{"virtio_net"},
			UKI:     &UKIOptions{Cmdline: cmdline, SecureBootKey: key, SecureBootCert: cert},
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.UKI == nil || res.UKI.Path != filepath.Join(out, "kiln-agent.efi") {
			t.Fatalf("UKI result %+v", res.UKI)
		}
		img, err := os.ReadFile(res.UKI.Path)
		if err != nil {
			t.Fatal(err)
		}
		if sha(t, res.UKI.Path) != res.UKI.SHA256 {
			t.Errorf("reported sha256 %s is not the file's", res.UKI.SHA256)
		}
		if i == 0 {
			first = img
			if msg, err := sbverify(t, cert, res.UKI.Path); err != nil {
				t.Fatalf("sbverify with the signing certificate: %v\n%s", err, msg)
			}
			if msg, err := sbverify(t, otherCert, res.UKI.Path); err == nil {
				t.Errorf("sbverify accepted another certificate:\n%s", msg)
			}
			if err := VerifyPEDigest(img); err != nil {
				t.Errorf("VerifyPEDigest: %v", err)
			}
			checkUKISections(t, res.UKI.Path, map[string][]byte{
				".cmdline": []byte(cmdline),
				".linux":   mustRead(t, kernel),
				".initrd":  mustRead(t, res.Initrd.Path),
				".osrel":   []byte(osRelease(testKver)),
			})
			if !strings.Contains(res.Manifest("", ""), "name: "+UKIArtifact) {
				t.Errorf("manifest has no %s artifact:\n%s", UKIArtifact, res.Manifest("", ""))
			}
			continue
		}
		if !bytes.Equal(first, img) {
			t.Errorf("two builds of the same inputs differ (%d and %d bytes)", len(first), len(img))
		}
	}
}

// TestSignedUKITamperedRefused: one byte changed anywhere the firmware hashes (here
// in the kernel section, and in the headers) makes sbverify and VerifyPEDigest
// refuse the image.
func TestSignedUKITamperedRefused(t *testing.T) {
	needUKITools(t)
	dir := t.TempDir()
	key, cert := writeSecureBootKey(t, dir, "db")
	signer, err := LoadSecureBootSigner(key, cert)
	if err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(dir, "vmlinuz")
	writeFile(t, kernel, bytes.Repeat([]byte("kernel!"), 50000), 0o644)
	initrd := filepath.Join(dir, "initrd")
	writeFile(t, initrd, bytes.Repeat([]byte("initrd?"), 30000), 0o644)
	path := filepath.Join(dir, "uki.efi")
	if _, err := buildUKI(context.Background(), UKIOptions{Cmdline: "quiet"}, signer, kernel, initrd, "6.1", path); err != nil {
		t.Fatal(err)
	}
	good := mustRead(t, path)
	f, err := pe.NewFile(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	linux := f.Section(".linux")
	for _, c := range []struct {
		name string
		off  int
	}{
		{"kernel section", int(linux.Offset) + 1000},
		{"PE header (DOS stub)", 0x50},
	} {
		bad := bytes.Clone(good)
		bad[c.off] ^= 0x01
		p := filepath.Join(dir, "tampered.efi")
		writeFile(t, p, bad, 0o644)
		if msg, err := sbverify(t, cert, p); err == nil {
			t.Errorf("%s: sbverify accepted a tampered image:\n%s", c.name, msg)
		}
		if err := VerifyPEDigest(bad); err == nil {
			t.Errorf("%s: VerifyPEDigest accepted a tampered image", c.name)
		}
	}
	// The checksum field is outside the hash (it changes when the signature is
	// appended): changing it keeps the signature valid, as the spec says.
	same := bytes.Clone(good)
	l, _ := parsePE(same)
	binary.LittleEndian.PutUint32(same[l.checksumOff:], 0x12345678)
	if err := VerifyPEDigest(same); err != nil {
		t.Errorf("checksum change: %v", err)
	}
	if _, err := signer.SignPE(good); err == nil || !strings.Contains(err.Error(), "signed already") {
		t.Errorf("signing a signed image: %v, want a refusal", err)
	}
}

// TestUKIBadInput: bad keys and options are refused before anything is written,
// naming the flag or file, never printing key material.
func TestUKIBadInput(t *testing.T) {
	needUKITools(t)
	root, kernel := fakePackage(t)
	busybox, kiln := fakeBinaries(t)
	dir := t.TempDir()
	key, cert := writeSecureBootKey(t, dir, "db")
	_, otherCert := writeSecureBootKey(t, dir, "other")
	encrypted := filepath.Join(dir, "enc.key")
	writeFile(t, encrypted, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("secretbytes")}), 0o600)
	for _, c := range []struct {
		name string
		o    UKIOptions
		want string
	}{
		{"key without cert", UKIOptions{SecureBootKey: key}, "go together"},
		{"key of another cert", UKIOptions{SecureBootKey: key, SecureBootCert: otherCert}, "does not belong to certificate"},
		{"encrypted key", UKIOptions{SecureBootKey: encrypted, SecureBootCert: cert}, "is encrypted"},
		{"cert as key", UKIOptions{SecureBootKey: cert, SecureBootCert: cert}, "not a private key"},
		{"two-line cmdline", UKIOptions{Cmdline: "a\nb"}, "--uki-cmdline"},
		{"no stub", UKIOptions{Stub: filepath.Join(dir, "nostub")}, "systemd-boot-efi"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		_, err := Build(context.Background(), Config{Kernel: kernel, ModulesDir: filepath.Join(root, "lib", "modules", testKver),
			Busybox: busybox, Kiln: kiln, OutDir: out, Modules: []string{"virtio"}, UKI: &c.o})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "secretbytes") || strings.Contains(err.Error(), "PRIVATE KEY-----") {
			t.Errorf("%s: the error shows key material: %v", c.name, err)
		}
		if _, serr := os.Stat(out); serr == nil {
			t.Errorf("%s: the output directory was written although the input was refused", c.name)
		}
	}
}

func checkUKISections(t *testing.T, path string, want map[string][]byte) {
	t.Helper()
	f, err := pe.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, data := range want {
		s := f.Section(name)
		if s == nil {
			t.Errorf("UKI has no %s section", name)
			continue
		}
		got, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		// Raw data is padded to the file alignment.
		if len(got) < len(data) || !bytes.Equal(got[:len(data)], data) {
			t.Errorf("section %s: %d bytes, not what was put in (%d bytes)", name, len(got), len(data))
		}
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzParsePE: the PE layout parser never panics and never returns ranges outside
// the input, and signing whatever it accepts stays in bounds.
func FuzzParsePE(f *testing.F) {
	if stub, err := os.ReadFile(DefaultEFIStub); err == nil {
		f.Add(stub[:min(len(stub), 4096)])
	}
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := parsePE(b)
		if err != nil {
			return
		}
		for _, s := range l.sections {
			if s.off < 0 || s.off+s.size > len(b) {
				t.Fatalf("section %+v outside %d bytes", s, len(b))
			}
		}
		authenticodeDigest(b, l)
		_ = VerifyPEDigest(b)
	})
}

// BenchmarkSignUKI: Authenticode signing of a 24 MiB UKI (hash over the image plus
// one RSA-2048 signature), the cost --secureboot-key adds to kiln image build.
func BenchmarkSignUKI(b *testing.B) {
	testkit.NeedTool(b, "objcopy", "binutils")
	testkit.NeedFiles(b, DefaultEFIStub)
	dir := b.TempDir()
	key, cert := writeSecureBootKey(b, dir, "db")
	signer, err := LoadSecureBootSigner(key, cert)
	if err != nil {
		b.Fatal(err)
	}
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	writeFile(b, kernel, bytes.Repeat([]byte{0x5a}, 8<<20), 0o644)
	writeFile(b, initrd, bytes.Repeat([]byte{0xa5}, 16<<20), 0o644)
	unsigned := filepath.Join(dir, "unsigned.efi")
	if _, err := buildUKI(context.Background(), UKIOptions{}, nil, kernel, initrd, "6.1", unsigned); err != nil {
		b.Fatal(err)
	}
	img := mustRead(b, unsigned)
	b.SetBytes(int64(len(img)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := signer.SignPE(img); err != nil {
			b.Fatal(err)
		}
	}
}
