// Package attest is Kiln's side of TPM 2.0 attestation: it pins and checks a
// machine's endorsement key (EK) and its certificate chain, proves by credential
// activation that an attestation key (AK) lives in the TPM that holds that EK,
// verifies quotes over Kiln's single-use nonces, replays the TCG event log against
// the quoted PCRs and extracts what the machine booted (firmware, Secure Boot state
// and keys, boot loader, kernel, initrd or UKI), and compares that with a baseline.
//
// Every input here comes from the machine and is untrusted until a check in this
// package has passed: the EK public key is trusted through a pin or a vendor
// certificate chain, the AK through credential activation on that EK, the PCR values
// through the AK's signature over Kiln's nonce, and the events through their replay
// to those PCR values. The TPM work itself (go-attestation, go-tpm) stays on the
// agent; this package only verifies.
package attest
