package agentwire

import "time"

// TPM-bound enrollment (spec.enrollment: tpm). The exchange rides on EnrollPath:
//
//  1. The agent posts its EnrollRequest. Without TPM evidence Kiln answers 202 with
//     an EnrollPending in state EnrollmentTPMEvidence: post again with TPM set.
//  2. With TPM (EK, its certificate, a new AK's creation parameters) and no Answer,
//     Kiln checks the EK against the machine's pin (and the vendor roots) and answers
//     202 with state EnrollmentTPMChallenge and a TPMChallenge: a credential
//     encrypted to the EK for the AK's name, and a nonce.
//  3. The agent activates the credential in its TPM (TPM2_ActivateCredential), quotes
//     the PCRs over the nonce with the AK, and posts again (same key, a new CSR bound
//     to the new connection) with TPM.Answer. Kiln verifies the answer, replays the
//     event log, applies the profile's measured-boot policy and only then issues the
//     certificate.
//
// Renewals of a TPM-enrolled machine re-quote the same way on RenewPath: Kiln
// answers 202 with a TPMChallenge without credential, and the agent posts its
// RenewRequest again with a TPMAnswer.
//
// Binary fields are base64 in JSON (encoding/json's []byte).

// Enrollment states that ask the agent for TPM work (see above).
const (
	EnrollmentTPMEvidence  = "tpm-evidence"
	EnrollmentTPMChallenge = "tpm-challenge"
)

// TPMEnrollment is what the agent sends of its TPM.
type TPMEnrollment struct {
	// EKPublic is the endorsement key's public key, PKIX DER.
	EKPublic []byte `json:"ekPublic"`
	// EKCertificate is the EK certificate from the TPM's NV (DER), if it has one.
	EKCertificate []byte `json:"ekCertificate,omitempty"`
	// AK are the attestation key's creation parameters.
	AK TPMAK `json:"ak"`
	// Answer is the answer to Kiln's TPMChallenge (step 3).
	Answer *TPMAnswer `json:"answer,omitempty"`
}

// TPMAK is an attestation key as the TPM made it: TPMT_PUBLIC, TPMS_CREATION_DATA,
// the TPMS_ATTEST of TPM2_CertifyCreation and its TPMT_SIGNATURE.
type TPMAK struct {
	Public            []byte `json:"public"`
	CreateData        []byte `json:"createData"`
	CreateAttestation []byte `json:"createAttestation"`
	CreateSignature   []byte `json:"createSignature"`
}

// TPMChallenge is Kiln's challenge: a nonce to quote over and, for an enrollment,
// TPM2_MakeCredential's output for the AK, encrypted to the EK.
type TPMChallenge struct {
	ID         string    `json:"id"`
	Nonce      []byte    `json:"nonce"`
	Credential []byte    `json:"credential,omitempty"`
	Secret     []byte    `json:"secret,omitempty"`
	ExpiresAt  time.Time `json:"expiresAt"`
}

// TPMAnswer answers a TPMChallenge.
type TPMAnswer struct {
	ChallengeID string `json:"challengeId"`
	// ActivatedSecret is what TPM2_ActivateCredential returned (enrollment only).
	ActivatedSecret []byte `json:"activatedSecret,omitempty"`
	// Quotes are TPM2_Quote's TPMS_ATTEST and TPMT_SIGNATURE, one per PCR bank.
	Quotes []TPMQuote `json:"quotes"`
	// PCRs are the values read, every bank quoted.
	PCRs []TPMPCR `json:"pcrs"`
	// EventLog is the TCG event log, as the firmware left it
	// (/sys/kernel/security/tpm0/binary_bios_measurements).
	EventLog []byte `json:"eventLog"`
}

// TPMQuote is one quote and its signature.
type TPMQuote struct {
	Quote     []byte `json:"quote"`
	Signature []byte `json:"signature"`
}

// TPMPCR is one PCR value; Alg is "sha1" or "sha256".
type TPMPCR struct {
	Index  int    `json:"index"`
	Alg    string `json:"alg"`
	Digest []byte `json:"digest"`
}
