package cli

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
)

// TestDoctorAgainstARunningServer runs kiln doctor on the host of a running kiln
// serve: its own data dir's KEK and CA pass, its listener's port is reported in
// use, and a Subnet naming an interface the host lacks fails the run with a fix.
func TestDoctorAgainstARunningServer(t *testing.T) {
	s := testkit.Serve(t, testkit.ServeOptions{})
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	ipxe := t.TempDir()
	os.WriteFile(filepath.Join(ipxe, "ipxe.efi"), []byte("iPXE 1.21.1 https"), 0o644)
	// kiln.yaml as kiln serve reads it: keys the doctor has no flag for are skipped.
	cfg := filepath.Join(t.TempDir(), "kiln.yaml")
	os.WriteFile(cfg, []byte("listen: "+u.Host+"\nhttps-listen: \"\"\ntftp-listen: \"\"\nipxe-dir: "+ipxe+"\ncert-ttl: 24h\n"), 0o600)
	args := []string{"doctor", "--config", cfg, "--skip-dhcp-check"}

	out, err := s.Kiln("", args...)
	if err != nil {
		t.Fatalf("doctor on a healthy host failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"warn  port listen: TCP " + u.Host + " cannot be bound",
		"ok    kek file: " + filepath.Join(s.DataDir, "kek.key") + ", mode 0600",
		"ok    CA certificate: expires",
		"ok    subnets: none defined",
		"ok    ipxe ipxe.efi: iPXE 1.21.1, HTTPS-capable",
		"warn  ipxe snponly.efi: missing",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}

	s.MustKiln("apiVersion: kiln.dev/v1\nkind: Subnet\nmetadata: {name: lab}\nspec: {cidr: 10.99.0.0/24, pools: [{start: 10.99.0.10, end: 10.99.0.19}], interfaces: [kiln-absent0]}\n", "apply", "-f", "-")
	out, err = s.Kiln("", args...)
	if err == nil {
		t.Fatalf("doctor passed with a Subnet on a missing interface:\n%s", out)
	}
	if !strings.Contains(out, "FAIL  subnet lab: names interface kiln-absent0, which this host does not have\n      fix: ") {
		t.Errorf("doctor output lacks the subnet failure and its fix:\n%s", out)
	}
}
