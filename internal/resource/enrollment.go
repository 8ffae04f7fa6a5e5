package resource

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Enrollment modes of a profile (spec.enrollment), or of one machine, which overrides
// its profile's.
const (
	// EnrollAutoBound issues a certificate at once to an enrollment whose token and
	// binding checks pass (the default).
	EnrollAutoBound = "auto-bound"
	// EnrollApprove keeps every enrollment pending until an operator approves it.
	EnrollApprove = "approve"
	// EnrollTPM enrolls by TPM 2.0 credential activation on the machine's pinned
	// endorsement key, and a quote of its measured boot (the attest package).
	EnrollTPM = "tpm"
)

func validateEnrollmentMode(path, mode string) error {
	switch mode {
	case "", EnrollAutoBound, EnrollApprove, EnrollTPM:
		return nil
	}
	return fmt.Errorf("%s: %q is not one of %s, %s, %s", path, mode, EnrollAutoBound, EnrollApprove, EnrollTPM)
}

// Measured-boot policies of a profile (spec.attestation).
const (
	// AttestEnforce: a boot that differs from the profile's baseline gets no
	// certificate and no secret.
	AttestEnforce = "enforce"
	// AttestWarn: a differing boot raises an alert, and goes on.
	AttestWarn = "warn"
	// AttestOff: quotes are verified (TPM enrollment) but not compared.
	AttestOff = "off"
)

func validateAttestation(path, mode string) error {
	switch mode {
	case "", AttestEnforce, AttestWarn, AttestOff:
		return nil
	}
	return fmt.Errorf("%s: %q is not one of %s, %s, %s", path, mode, AttestEnforce, AttestWarn, AttestOff)
}

// MachineTPM pins a machine's TPM.
type MachineTPM struct {
	// EKSHA256 is the sha256 (hex) of the TPM's endorsement key (PKIX DER public
	// key), as `kiln agent tpm-ek` or tpm2_readpublic print it: only a TPM with
	// this EK enrolls as the machine.
	EKSHA256 string `json:"ekSHA256,omitempty"`
}

func (t *MachineTPM) validate(path string) error {
	if t == nil || t.EKSHA256 == "" {
		return nil
	}
	p := strings.ToLower(strings.ReplaceAll(t.EKSHA256, ":", ""))
	if _, err := hex.DecodeString(p); err != nil || len(p) != 64 {
		return fmt.Errorf("%s.ekSHA256: %q is not a sha256 (64 hex digits)", path, t.EKSHA256)
	}
	t.EKSHA256 = p
	return nil
}

// EnrollmentSpec is an enrollment request that waits for an operator (profiles or
// machines with spec.enrollment: approve, or a host that asked without a token).
// Kiln alone writes it: the request as it came, then the decision.
type EnrollmentSpec struct {
	// State is pending, approved, denied or expired (agentwire.Enrollment*).
	State string `json:"state"`
	// Source is the address the request came from.
	Source string `json:"source"`
	// MACs are the reported MAC addresses, normalized.
	MACs []string `json:"macs,omitempty"`
	// Hostname is the reported hostname, if any.
	Hostname string `json:"hostname,omitempty"`
	// Facts are the reported facts, bounded (see the enroll package).
	Facts map[string]any `json:"facts,omitempty"`
	// KeyFingerprint is the SHA-256 of the CSR's public key (SPKI, hex): only the
	// holder of that key may collect the certificate.
	KeyFingerprint string `json:"keyFingerprint"`
	// KeyType describes the key ("ECDSA P-256").
	KeyType string `json:"keyType,omitempty"`
	// Token is the id of the join token the request came with, if any.
	Token string `json:"token,omitempty"`
	// Profile is the token's profile, if any: a new machine gets it.
	Profile string `json:"profile,omitempty"`
	// Labels are the token's labels, for a new machine.
	Labels map[string]string `json:"labels,omitempty"`
	// RequestedMachine is the machine the request would bind (the token's machine,
	// the owner of its MACs, or the name a new machine would get).
	RequestedMachine string `json:"requestedMachine,omitempty"`
	// Machine is the machine an operator approved the request as.
	Machine    string     `json:"machine,omitempty"`
	ExpiresAt  time.Time  `json:"expiresAt"`
	DecidedBy  string     `json:"decidedBy,omitempty"`
	DecidedAt  *time.Time `json:"decidedAt,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	IssuedAt   *time.Time `json:"issuedAt,omitempty"`
	CertSerial string     `json:"certSerial,omitempty"`
	// TPMEKSHA256 is the EK a TPM enrollment presented: approving the request pins
	// it to the machine (trust on first use, by an operator's decision).
	TPMEKSHA256 string `json:"tpmEKSHA256,omitempty"`
}

func (s *EnrollmentSpec) Validate() error {
	switch s.State {
	case "pending", "approved", "denied", "expired":
	default:
		return fmt.Errorf("spec.state: %q is not one of pending, approved, denied, expired", s.State)
	}
	if s.Machine != "" && ValidateName(s.Machine) != nil {
		return fmt.Errorf("spec.machine: %q is not a machine name", s.Machine)
	}
	return nil
}

// UniqueKeys claims, while the request is pending, one key for the whole kind and one
// per source address, so that the store counts pending requests (ListKeys) without
// reading them.
func (s *EnrollmentSpec) UniqueKeys() []string {
	if s.State != "pending" {
		return nil
	}
	return []string{"pending:" + s.KeyFingerprint, "pending-from:" + s.Source + "/" + s.KeyFingerprint}
}
