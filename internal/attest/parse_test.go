package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/google/go-attestation/attest"
)

// TestDescribe: short ASCII or UTF-16 event data is shown to the operator (a
// tagged event without its 8-byte header); binary, empty, over-long or
// control-character data is not.
func TestDescribe(t *testing.T) {
	utf := func(s string) []byte {
		var b []byte
		for _, u := range utf16.Encode([]rune(s)) {
			b = binary.LittleEndian.AppendUint16(b, u)
		}
		return b
	}
	tagged := append([]byte{1, 2, 3, 4, 5, 0, 0, 0}, "Linux initrd\x00"...)
	cases := []struct {
		name string
		e    attest.Event
		want string
	}{
		{"ascii", attest.Event{Type: 0x80000007, Data: []byte("Calling EFI Application from Boot Option")}, "Calling EFI Application from Boot Option"},
		{"nul-terminated", attest.Event{Type: 0x8, Data: []byte("OVMF\x00\x00")}, "OVMF"},
		{"utf-16", attest.Event{Type: 0x80000007, Data: utf("Exit Boot Services")}, "Exit Boot Services"},
		{"tagged", attest.Event{Type: evEventTag, Data: tagged}, "Linux initrd"},
		{"tag header only", attest.Event{Type: evEventTag, Data: tagged[:8]}, ""},
		{"binary", attest.Event{Type: 0x4, Data: []byte{0, 0, 0, 0}}, ""},
		{"odd binary", attest.Event{Type: 0x4, Data: []byte{1, 2, 3}}, ""},
		{"control characters", attest.Event{Type: 0x5, Data: []byte("a\x1bb")}, ""},
		{"high bytes", attest.Event{Type: 0x5, Data: []byte("caf\xc3\xa9")}, ""},
		{"empty", attest.Event{Type: 0x5}, ""},
		{"256 bytes", attest.Event{Type: 0x5, Data: []byte(strings.Repeat("a", 256))}, strings.Repeat("a", 256)},
		{"257 bytes", attest.Event{Type: 0x5, Data: []byte(strings.Repeat("a", 257))}, ""},
	}
	for _, c := range cases {
		if got := describe(c.e); got != c.want {
			t.Errorf("%s: describe = %q, want %q", c.name, got, c.want)
		}
	}
	tag := binary.LittleEndian.AppendUint32(nil, linuxInitrdTagID)
	if isLinuxInitrdTag(tag) || !isLinuxInitrdTag(append(tag, 0, 0, 0, 0)) {
		t.Error("isLinuxInitrdTag: want the initrd tag with its size only")
	}
	if isLinuxInitrdTag(append(binary.LittleEndian.AppendUint32(nil, linuxInitrdTagID+1), 0, 0, 0, 0)) {
		t.Error("isLinuxInitrdTag accepts another tag")
	}
}

func selfSigned(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

// TestLoadEKRoots: every certificate of the .pem/.crt/.cer files is loaded (a root
// and an intermediate in one file count two), other files and other PEM blocks are
// left out, a folder without any certificate and a broken certificate are errors
// naming the file.
func TestLoadEKRoots(t *testing.T) {
	dir := t.TempDir()
	root, rootKey := selfSigned(t, "root", nil, nil)
	inter, _ := selfSigned(t, "intermediate", root, rootKey)
	pemOf := func(cs ...*x509.Certificate) []byte {
		var b []byte
		for _, c := range cs {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		return b
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := LoadEKRoots(dir); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("empty folder: %v", err)
	}
	write("vendor.pem", append(pemOf(root, inter), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}})...))
	write("notes.txt", pemOf(root))
	write("other.cer", pemOf(inter))
	r, err := LoadEKRoots(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count() != 3 {
		t.Errorf("Count = %d, want 3 (two in vendor.pem, one in other.cer; notes.txt left out)", r.Count())
	}
	write("broken.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}))
	if _, err := LoadEKRoots(dir); err == nil || !strings.Contains(err.Error(), "broken.crt") {
		t.Fatalf("broken certificate: %v, want an error naming broken.crt", err)
	}
	if _, err := LoadEKRoots(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("a missing folder loaded")
	}
}

func TestNormalizeEKPin(t *testing.T) {
	pin := strings.Repeat("ab", 32)
	for _, in := range []string{pin, strings.ToUpper(pin), " " + pin + " "} {
		if got, err := NormalizeEKPin(in); err != nil || got != pin {
			t.Errorf("NormalizeEKPin(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", pin[:62], pin + "ab", strings.Repeat("zz", 32)} {
		if _, err := NormalizeEKPin(in); err == nil {
			t.Errorf("NormalizeEKPin(%q) accepted", in)
		}
	}
}
