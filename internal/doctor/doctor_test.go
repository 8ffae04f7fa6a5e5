package doctor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckKEKFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		mode os.FileMode
		want Status
	}{
		{"owner only", 0o600, OK},
		{"owner read only", 0o400, OK},
		{"group readable", 0o640, Fail},
		{"world readable", 0o644, Fail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := os.WriteFile(p, []byte(strings.Repeat("ab", 32)), tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, tc.mode) // past the umask
			if f := CheckKEKFile(p); f.Status != tc.want {
				t.Errorf("mode %04o: %v (%s), want %v", tc.mode, f.Status, f.Detail, tc.want)
			}
		})
	}
	if f := CheckKEKFile(filepath.Join(dir, "absent")); f.Status != Warn {
		t.Errorf("absent KEK: %v, want a warning (created at first start)", f.Status)
	}
	if f := CheckKEKFile(dir); f.Status != Fail {
		t.Errorf("a directory as KEK: %v, want a failure", f.Status)
	}
}

func writeCert(t *testing.T, path string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheckCertificate(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	for _, tc := range []struct {
		name     string
		notAfter time.Time
		want     Status
	}{
		{"a year left", now.Add(365 * 24 * time.Hour), OK},
		{"a week left", now.Add(7 * 24 * time.Hour), Warn},
		{"expired", now.Add(-time.Hour), Fail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".crt")
			writeCert(t, p, tc.notAfter)
			if f := CheckCertificate("CA", p, now, 30*24*time.Hour); f.Status != tc.want {
				t.Errorf("%v (%s), want %v", f.Status, f.Detail, tc.want)
			}
		})
	}
	garbage := filepath.Join(dir, "garbage.crt")
	os.WriteFile(garbage, []byte("not a certificate"), 0o644)
	if f := CheckCertificate("CA", garbage, now, time.Hour); f.Status != Fail {
		t.Errorf("a file without PEM: %v, want a failure", f.Status)
	}
}

func TestCheckIPXE(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ipxe.efi"), []byte("\x00MZ...iPXE 1.21.1+git20231006 ... https:// ..."), 0o644)
	os.WriteFile(filepath.Join(dir, "undionly.kpxe"), []byte("\x00compressed, iPXE 1.20.1 http only"), 0o644)
	got := map[string]Finding{}
	for _, f := range CheckIPXE(dir) {
		got[f.Check] = f
	}
	if f := got["ipxe ipxe.efi"]; f.Status != OK || !strings.Contains(f.Detail, "iPXE 1.21.1+git20231006") || !strings.Contains(f.Detail, "HTTPS-capable") {
		t.Errorf("ipxe.efi: %+v", f)
	}
	if f := got["ipxe undionly.kpxe"]; f.Status != Warn || !strings.Contains(f.Detail, "no sign of HTTPS") {
		t.Errorf("undionly.kpxe: %+v", f)
	}
	if f := got["ipxe snponly.efi"]; f.Status != Warn || !strings.Contains(f.Detail, "missing") {
		t.Errorf("snponly.efi: %+v", f)
	}
	if fs := CheckIPXE(filepath.Join(dir, "absent")); len(fs) != 1 || fs[0].Status != Fail {
		t.Errorf("absent directory: %+v", fs)
	}
}

func TestCheckPortsAndInterfaces(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if f := CheckTCPPort("listen", ln.Addr().String()); f.Status != Warn {
		t.Errorf("a bound port: %v (%s), want a warning", f.Status, f.Detail)
	}
	if f := CheckTCPPort("listen", "127.0.0.1:0"); f.Status != OK {
		t.Errorf("a free port: %v (%s)", f.Status, f.Detail)
	}
	uc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if f := CheckUDPPort("tftp", uc.LocalAddr().String()); f.Status != Warn {
		t.Errorf("a bound UDP port: %v (%s), want a warning", f.Status, f.Detail)
	}
	if f := CheckInterface("lo"); f.Status != OK || !strings.Contains(f.Detail, "127.0.0.1/8") {
		t.Errorf("lo: %+v", f)
	}
	if f := CheckInterface("kiln-absent0"); f.Status != Fail {
		t.Errorf("absent interface: %+v", f)
	}
	fs := CheckSubnetInterfaces(map[string][]string{"lab": {"lo", "kiln-absent0"}})
	if len(fs) != 2 || fs[0].Status != OK || fs[1].Status != Fail || !strings.Contains(fs[1].Detail, "kiln-absent0") {
		t.Errorf("subnet interfaces: %+v", fs)
	}
}

func TestReportReturnsTheWorstStatusAndPrintsFixes(t *testing.T) {
	var b strings.Builder
	worst := Report(&b, []Finding{
		{Check: "a", Status: OK, Detail: "fine", Fix: "never shown"},
		{Check: "b", Status: Fail, Detail: "broken", Fix: "repair b"},
		{Check: "c", Status: Warn, Detail: "odd", Fix: "look at c"},
	})
	if worst != Fail {
		t.Errorf("worst %v, want FAIL", worst)
	}
	out := b.String()
	if strings.Contains(out, "never shown") || !strings.Contains(out, "FAIL  b: broken\n      fix: repair b") || !strings.Contains(out, "fix: look at c") {
		t.Errorf("report:\n%s", out)
	}
}
