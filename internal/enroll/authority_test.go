package enroll

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/testkit"
)

func TestCAIsCreatedOnceAndSealed(t *testing.T) {
	dir := t.TempDir()
	st := testkit.OpenSQLite(t, dir)
	seed(t, st)
	ctx := context.Background()
	s1, err := New(ctx, st, Config{DataDir: dir, ServerSANs: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KEKFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kek.key: %v %v", fi, err)
	}
	if ca, err := os.ReadFile(filepath.Join(dir, CACertFileName)); err != nil || string(ca) != string(s1.CACertificatePEM()) {
		t.Fatalf("ca.crt copy: %v", err)
	}
	if c := s1.ca.cert; !c.IsCA || c.PublicKeyAlgorithm != x509.ECDSA || c.KeyUsage&x509.KeyUsageCRLSign == 0 {
		t.Fatalf("CA certificate %+v", c)
	}
	// The stored private key is sealed, never in clear.
	var spec string
	st.View(ctx, func(tx store.Tx) error {
		o, err := tx.Get(ctx, authorityKind, authorityName)
		if err == nil {
			spec = string(o.Spec)
		}
		return err
	})
	if strings.Contains(spec, "PRIVATE KEY") || !strings.Contains(spec, sealPrefix) {
		t.Fatalf("stored CA: %s", spec)
	}
	// A second start finds the same CA.
	s2, err := New(ctx, st, Config{DataDir: dir, ServerSANs: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if s2.CAFingerprint() != s1.CAFingerprint() {
		t.Fatal("the CA changed across restarts")
	}
	// Another KEK cannot open it, and says so.
	other := make([]byte, KEKSize)
	rand.Read(other)
	if _, err := New(ctx, st, Config{KEK: other, ServerSANs: []string{"localhost"}}); err == nil || !strings.Contains(err.Error(), "sealed under key-encryption key") {
		t.Fatalf("wrong KEK: %v", err)
	}
	// A missing key file is not silently replaced once a CA exists.
	if _, err := New(ctx, st, Config{KEKFile: filepath.Join(t.TempDir(), "kek.key"), ServerSANs: []string{"localhost"}}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing KEK file: %v", err)
	}
	// A key file others can read is refused.
	os.Chmod(filepath.Join(dir, KEKFileName), 0o644)
	if _, err := New(ctx, st, Config{DataDir: dir, ServerSANs: []string{"localhost"}}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("readable KEK file: %v", err)
	}
}

func TestParseKEK(t *testing.T) {
	for _, s := range []string{strings.Repeat("ab", 32), "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=", strings.Repeat("ab", 32) + "\n"} {
		if k, err := ParseKEK(s); err != nil || len(k) != 32 {
			t.Errorf("ParseKEK(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "abc", strings.Repeat("zz", 32), strings.Repeat("ab", 16)} {
		if _, err := ParseKEK(s); err == nil {
			t.Errorf("ParseKEK(%q) accepted", s)
		}
	}
}

func TestImportIntermediateCA(t *testing.T) {
	root, rootKey := selfSignedCA(t, "Operator Root", nil, nil)
	inter, interKey := selfSignedCA(t, "Operator Kiln Intermediate", root, rootKey)
	dir := t.TempDir()
	kder, _ := x509.MarshalECPrivateKey(interKey)
	certFile := filepath.Join(dir, "inter.crt")
	keyFile := filepath.Join(dir, "inter.key")
	os.WriteFile(certFile, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: inter.Raw}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})...), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)

	e := newEnv(t, func(c *Config) { c.ImportCACert, c.ImportCAKey = certFile, keyFile })
	if e.srv.CAFingerprint() != Fingerprint(inter.Raw) || !e.srv.CA().Imported {
		t.Fatal("the imported CA is not the one in use")
	}
	if n := strings.Count(string(e.srv.CACertificatePEM()), "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("published chain has %d certificates, want 2", n)
	}
	a := e.newAgent()
	if code, _, msg := e.enroll(a, e.token(TokenRequest{}), facts("52:54:00:00:01:01")); code != http.StatusOK {
		t.Fatal(code, msg)
	}
	// The machine certificate chains to the operator's root.
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	if _, err := a.cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.get(a.http, "/agent/v1/self"); code != http.StatusOK {
		t.Fatalf("mTLS with the imported CA: %d", code)
	}
	// A restart with the same import flags (as a unit file keeps them) starts with
	// the stored CA, and the creation was audited once, naming the import.
	again, err := New(e.ctx, e.st, Config{DataDir: e.dir, ImportCACert: certFile, ImportCAKey: keyFile, ServerSANs: []string{"localhost"}})
	if err != nil || again.CAFingerprint() != Fingerprint(inter.Raw) {
		t.Fatalf("restart with the same import: %v", err)
	}
	var created []string
	for _, a := range e.auditEntries("create") {
		if a.Kind == authorityKind {
			created = append(created, a.Summary)
		}
	}
	if len(created) != 1 || !strings.Contains(created[0], "imported intermediate CA") {
		t.Fatalf("audit entries of the CA's creation: %q", created)
	}
	// Another CA cannot be imported over it.
	other, otherKey := selfSignedCA(t, "Other", nil, nil)
	okder, _ := x509.MarshalECPrivateKey(otherKey)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Raw}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: okder}), 0o600)
	if _, err := New(e.ctx, e.st, Config{DataDir: e.dir, ImportCACert: certFile, ImportCAKey: keyFile, ServerSANs: []string{"localhost"}}); err == nil || !strings.Contains(err.Error(), "already has another CA") {
		t.Fatalf("second import: %v", err)
	}
}

func TestImportRefusesBadCA(t *testing.T) {
	root, rootKey := selfSignedCA(t, "Root", nil, nil)
	_, otherKey := selfSignedCA(t, "Other", nil, nil)
	leafKey := otherKey
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: randomSerial(), NotBefore: root.NotBefore, NotAfter: root.NotAfter}, root, leafKey.Public(), rootKey)
	pemOf := func(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }
	keyOf := func(k any) []byte {
		d, _ := x509.MarshalPKCS8PrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: d})
	}
	cases := []struct {
		name      string
		cert, key []byte
		want      string
	}{
		{"not a CA", pemOf(leafDER), keyOf(leafKey), "is not a CA"},
		{"key of another certificate", pemOf(root.Raw), keyOf(otherKey), "does not belong to the CA certificate"},
		{"no certificate", []byte("x"), keyOf(rootKey), "no PEM CERTIFICATE block"},
		{"no key", pemOf(root.Raw), []byte("x"), "no PEM block"},
	}
	for _, tc := range cases {
		if _, err := parseImport(tc.cert, tc.key, root.NotBefore.Add(1)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// Two replicas on one PostgreSQL database share the CA (created once, by whichever
// starts first) and count a token's uses together: N uses means N.
func TestTwoReplicasOnPostgres(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	st1, st2 := testkit.OpenPostgres(t, url), testkit.OpenPostgres(t, url)
	seed(t, st1)
	kek := make([]byte, KEKSize)
	rand.Read(kek)
	// Both replicas start at once.
	type res struct {
		s   *Server
		err error
	}
	ch := make(chan res, 2)
	for _, st := range []store.Store{st1, st2} {
		go func() {
			s, err := New(ctx, st, Config{KEK: kek, ServerSANs: []string{"localhost"}})
			ch <- res{s, err}
		}()
	}
	r1, r2 := <-ch, <-ch
	if r1.err != nil || r2.err != nil {
		t.Fatal(r1.err, r2.err)
	}
	if r1.s.CAFingerprint() != r2.s.CAFingerprint() {
		t.Fatal("the replicas have different CAs")
	}
	tok, err := r1.s.CreateToken(ctx, "token:test", TokenRequest{Profile: "worker", MaxUses: 7})
	if err != nil {
		t.Fatal(err)
	}
	if ok := concurrentEnrollments(t, []*Server{r1.s, r2.s}, tok.Token, 30); ok != 7 {
		t.Fatalf("%d enrollments succeeded across two replicas, want 7", ok)
	}
	var uses int
	st2.View(ctx, func(tx store.Tx) error {
		o, err := tx.Get(ctx, "JoinToken", tok.ID)
		if err == nil {
			uses = tokenInfo(o).Uses
		}
		return err
	})
	if uses != 7 {
		t.Fatalf("uses %d, want 7", uses)
	}
	// A token made on one replica is revoked on the other.
	tok2, _ := r2.s.CreateToken(ctx, "token:test", TokenRequest{Profile: "worker"})
	if err := r1.s.RevokeToken(ctx, "token:test", tok2.ID); err != nil {
		t.Fatal(err)
	}
	if ok := concurrentEnrollmentsExpect(t, r2.s, tok2.Token, "revoked"); !ok {
		t.Fatal("revoked token accepted by the other replica")
	}
}

func concurrentEnrollmentsExpect(t *testing.T, s *Server, tok, reason string) bool {
	key, _ := newP256()
	_, err := s.Enroll(context.Background(), &EnrollRequest{Token: tok, CSR: csrPEM(t, nil, key), Facts: facts("52:54:00:00:02:01")}, loopback)
	return err != nil && strings.Contains(err.Error(), reason)
}

func TestKEKRotationReseals(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	seed(t, st)
	ctx := context.Background()
	k1, k2, k3 := make([]byte, KEKSize), make([]byte, KEKSize), make([]byte, KEKSize)
	rand.Read(k1)
	rand.Read(k2)
	rand.Read(k3)
	s1, err := New(ctx, st, Config{KEK: k1, ServerSANs: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	// A rotation (internal/secrets) runs the hook in its transaction.
	err = st.Update(ctx, func(tx store.Tx) error {
		_, err := s1.ResealHook(ctx, tx, k1, k2)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, st, Config{KEK: k1, ServerSANs: []string{"localhost"}}); err == nil {
		t.Fatal("the old KEK still opens the CA after the rotation")
	}
	s2, err := New(ctx, st, Config{KEK: k2, ServerSANs: []string{"localhost"}})
	if err != nil || s2.CAFingerprint() != s1.CAFingerprint() {
		t.Fatalf("after rotation: %v", err)
	}
	// A start with the next key and the current one as "other" re-seals at once.
	s3, err := New(ctx, st, Config{KEK: k3, OtherKEKs: [][]byte{k2}, ServerSANs: []string{"localhost"}})
	if err != nil || s3.CAFingerprint() != s1.CAFingerprint() {
		t.Fatalf("re-seal at start: %v", err)
	}
	if _, err := New(ctx, st, Config{KEK: k3, ServerSANs: []string{"localhost"}}); err != nil {
		t.Fatalf("after re-seal at start: %v", err)
	}
	if reseals := len(testkit.AuditEntries(t, st, "reseal")); reseals != 2 {
		t.Fatalf("%d reseal audit entries, want 2", reseals)
	}
}
