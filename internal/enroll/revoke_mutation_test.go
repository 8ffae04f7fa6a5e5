package enroll

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
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
