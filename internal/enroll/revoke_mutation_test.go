package enroll

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/http"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// TestRevocationRecords: a revoked agent certificate's record keeps the
// certificate's own expiry (the CRL lists it until then), not the revocation time
// plus a certificate lifetime; revoking a machine that holds only a boot
// certificate revokes that one and leaves the machine's status alone (it had no
// agent certificate to mark revoked); each revocation is audited.
func TestRevocationRecords(t *testing.T) {
	e := newEnv(t)
	a := e.newAgent()
	if code, _, msg := e.enroll(a, e.token(TokenRequest{}), facts("52:54:00:00:00:41", "hostname", "rev-2")); code != http.StatusOK {
		t.Fatal(code, msg)
	}
	e.clock.Advance(time.Hour)
	res, err := e.srv.RevokeMachine(e.ctx, "token:admin", "rev-2")
	if err != nil {
		t.Fatal(err)
	}
	serial := hex.EncodeToString(a.cert.Leaf.SerialNumber.Bytes())
	if len(res.Serials) != 1 || res.Serials[0] != serial {
		t.Fatalf("revoked %v, want [%s]", res.Serials, serial)
	}
	if n := e.eventTypes("rev-2")["CertificateRevoked"]; n != 1 {
		t.Errorf("%d CertificateRevoked events, want 1", n)
	}
	var rs revocationSpec
	if err := json.Unmarshal(e.object(revocationKind, serial).Spec, &rs); err != nil {
		t.Fatal(err)
	}
	if !rs.NotAfter.Truncate(time.Second).Equal(a.cert.Leaf.NotAfter) || !rs.RevokedAt.Equal(e.clock.Now()) || rs.Machine != "rev-2" || rs.Boot {
		t.Errorf("revocation record %+v, want notAfter %v (the certificate's), revokedAt %v", rs, a.cert.Leaf.NotAfter, e.clock.Now())
	}

	e.createMachine("boot-only", "worker", "52:54:00:00:00:42", resource.StateProvisioning)
	if _, err := e.srv.ExportBootCert(e.ctx, "token:admin", "boot-only", BootCertRequest{}); err != nil {
		t.Fatal(err)
	}
	before := string(e.machine("boot-only").Status)
	res, err = e.srv.RevokeMachine(e.ctx, "token:admin", "boot-only")
	if err != nil || len(res.Serials) != 1 {
		t.Fatalf("revoking a boot certificate: %+v, %v", res, err)
	}
	var bs revocationSpec
	if err := json.Unmarshal(e.object(revocationKind, res.Serials[0]).Spec, &bs); err != nil || !bs.Boot {
		t.Errorf("boot certificate's revocation %+v (%v), want boot", bs, err)
	}
	if n := len(e.auditEntries("revoke-cert")); n != 2 {
		t.Errorf("%d revoke-cert audit entries after two revocations, want 2", n)
	}
	if after := string(e.machine("boot-only").Status); after != before {
		t.Errorf("machine status changed by revoking its boot certificate:\n%s\nto\n%s", before, after)
	}
}

// TestCRLReuse: a served CRL is reused for crlRefresh: a revocation another
// replica stored meanwhile shows once that has passed (this replica's own
// revocations reset it at once: TestRevocationAndCRL). Each CRL is valid for a
// day.
func TestCRLReuse(t *testing.T) {
	e := newEnv(t)
	serials := func() []string {
		t.Helper()
		der, err := e.srv.CRL(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if d := crl.NextUpdate.Sub(crl.ThisUpdate); d != 24*time.Hour {
			t.Errorf("CRL valid for %s, want 24h", d)
		}
		var out []string
		for _, r := range crl.RevokedCertificateEntries {
			out = append(out, hex.EncodeToString(r.SerialNumber.Bytes()))
		}
		return out
	}
	if got := serials(); len(got) != 0 {
		t.Fatalf("a new CA's CRL lists %v", got)
	}
	serial := hex.EncodeToString(big.NewInt(0x4b1d).Bytes())
	raw, _ := json.Marshal(revocationSpec{Serial: serial, Machine: "elsewhere", RevokedAt: e.clock.Now(), NotAfter: e.clock.Now().Add(24 * time.Hour)})
	if err := e.st.Update(e.ctx, func(tx store.Tx) error {
		return tx.Create(e.ctx, &resource.Object{Kind: revocationKind, Metadata: resource.Metadata{Name: serial}, Spec: raw})
	}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(crlRefresh - time.Second)
	if got := serials(); len(got) != 0 {
		t.Errorf("within %s the CRL was made again: %v", crlRefresh, got)
	}
	e.clock.Advance(2 * time.Second)
	if got := serials(); len(got) != 1 || got[0] != serial {
		t.Errorf("after %s the CRL lists %v, want [%s]", crlRefresh, got, serial)
	}
}
