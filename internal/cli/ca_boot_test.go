package cli

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/efisig"
	"github.com/kilnhq/kiln/internal/enroll"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

// caServer serves the enrollment operator routes of a server with or without a boot CA.
func caServer(t *testing.T, bootCA bool) (*globalFlags, *enroll.Server) {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	st, err := sqlite.Open(ctx, dir, sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := enroll.New(ctx, st, enroll.Config{DataDir: dir, ServerSANs: []string{"127.0.0.1"}, BootCA: bootCA})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.RegisterOperator(func(method, path, role, summary string, h http.HandlerFunc) { mux.HandleFunc(method+" "+path, h) })
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return &globalFlags{server: hs.URL, token: "t", dataDir: dir, timeout: 10 * time.Second}, srv
}

// kiln ca show --efi-siglist writes the boot CA (not the machine CA) as the one
// EFI_SIGNATURE_LIST firmware's TlsCaCertificate holds.
func TestCAShowEFISigList(t *testing.T) {
	g, srv := caServer(t, true)
	boot := srv.BootCA()
	out, _, err := runEnrollCmd(t, newCACmd(g), "show", "--boot", "--fingerprint")
	if err != nil || strings.TrimSpace(out) != boot.Fingerprint || boot.Fingerprint == srv.CAFingerprint() {
		t.Fatalf("ca show --boot --fingerprint: %q %v", out, err)
	}
	path := filepath.Join(t.TempDir(), "cacerts.esl")
	if _, _, err := runEnrollCmd(t, newCACmd(g), "show", "--efi-siglist", path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := efisig.Parse(raw)
	if err != nil || len(entries) != 1 {
		t.Fatalf("written list: %d entries, %v", len(entries), err)
	}
	b, _ := pem.Decode([]byte(boot.Certificate))
	if entries[0].Type != efisig.CertX509() || !bytes.Equal(entries[0].Data, b.Bytes) {
		t.Fatalf("the list holds %x..., not the boot CA's DER", entries[0].Data[:8])
	}

	g, _ = caServer(t, false)
	if _, _, err := runEnrollCmd(t, newCACmd(g), "show", "--efi-siglist", path+".2"); err == nil || !strings.Contains(err.Error(), "no boot CA") {
		t.Fatalf("a server without a boot CA: %v", err)
	}
	if _, err := os.Stat(path + ".2"); err == nil {
		t.Fatal("a file was written without a boot CA")
	}
}
