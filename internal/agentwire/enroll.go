package agentwire

import "time"

// EnrollRequest is the body of POST EnrollPath.
type EnrollRequest struct {
	// Token is the join token. Empty only when registration by MAC is switched on.
	Token string `json:"token,omitempty"`
	// CSR is a PEM certificate request: the agent's public key, signed by its private
	// key, which never leaves the machine.
	CSR string `json:"csr"`
	// Facts are what the agent reports about the machine.
	Facts map[string]any `json:"facts,omitempty"`
	// TPM is the machine's TPM evidence, for spec.enrollment: tpm (see tpm.go).
	TPM *TPMEnrollment `json:"tpm,omitempty"`
}

// RenewRequest is the body of POST RenewPath: a CSR for a new key.
type RenewRequest struct {
	CSR string `json:"csr"`
	// TPMAnswer is the re-quote a TPM-enrolled machine sends after Kiln's
	// TPMChallenge (see tpm.go).
	TPMAnswer *TPMAnswer `json:"tpmAnswer,omitempty"`
}

// EnrollResponse is Kiln's answer to POST EnrollPath and RenewPath: the issued
// certificate.
type EnrollResponse struct {
	Machine       string    `json:"machine"`
	Certificate   string    `json:"certificate"` // PEM
	CAChain       string    `json:"caChain"`     // PEM: Kiln's CA, then its issuers if imported
	CAFingerprint string    `json:"caFingerprint"`
	Serial        string    `json:"serial"`
	NotAfter      time.Time `json:"notAfter"`
	// RenewAfter is when the agent should renew: at two thirds of the lifetime.
	RenewAfter time.Time `json:"renewAfter"`
	// BoundConnection: the connection the agent enrolled on now speaks for the machine;
	// false: the agent must open a new connection with the certificate.
	BoundConnection bool `json:"boundConnection,omitempty"`
}
