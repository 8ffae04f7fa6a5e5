package enroll

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// What this package keeps in the store beside the operator's objects: its internal
// kinds, a join token's status and the fields of a machine's status it owns.

// Internal kinds of objects this package stores (not in resource.Kinds).
const (
	// enrollKeyKind records each enrolled public key ("k-" + SHA-256 of its SPKI), so
	// that a replayed enrollment (the same CSR again) is refused.
	enrollKeyKind = "EnrollKey"
	// revocationKind records a revoked certificate (name: serial, hex) for the CRL.
	revocationKind = "CertRevocation"
	// bootCertKind maps an exported iPXE client certificate (name: its fingerprint) to
	// its machine.
	bootCertKind = "EnrollBootCert"
)

// tokenStatus is a JoinToken's status, owned by Kiln.
type tokenStatus struct {
	Uses        int        `json:"uses"`
	LastUsedAt  *time.Time `json:"lastUsedAt,omitempty"`
	LastMachine string     `json:"lastMachine,omitempty"`
	RevokedAt   *time.Time `json:"revokedAt,omitempty"`
	// Boot: a per-boot token's claims, to sign it again (see bootGrant).
	Boot *bootGrant `json:"boot,omitempty"`
}

// certStatus is the part of a machine's status this package reads and writes. Other
// status fields are kept as they are (see mergeStatus).
type certStatus struct {
	State           string     `json:"state,omitempty"`
	CertFingerprint string     `json:"certFingerprint,omitempty"`
	CertSerial      string     `json:"certSerial,omitempty"`
	CertNotAfter    *time.Time `json:"certNotAfter,omitempty"`
	EnrolledAt      *time.Time `json:"enrolledAt,omitempty"`
}

func machineCertStatus(m *resource.Object) certStatus {
	var cs certStatus
	if len(m.Status) > 0 {
		_ = json.Unmarshal(m.Status, &cs)
	}
	return cs
}

// mergeStatus sets (or, for nil values, removes) fields of a status object and keeps
// the others: the workflow engine and this package write different fields.
func mergeStatus(raw json.RawMessage, set map[string]any) (json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("stored status: %w", err)
		}
	}
	for k, v := range set {
		if v == nil {
			delete(m, k)
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		m[k] = b
	}
	return json.Marshal(m)
}
