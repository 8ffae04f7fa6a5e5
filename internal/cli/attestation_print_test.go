package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestPrintAttestationKernel: describe names the kernel a TPM-attested machine
// booted and whether it is the artifact Kiln served; control characters in the
// status never reach the terminal.
func TestPrintAttestationKernel(t *testing.T) {
	for _, c := range []struct{ status, want, notWant string }{
		{`{"tpm":{"attestation":"ok","measurements":{"kernel":"0123456789abcdef0123","kernelArtifact":"kernel kiln-agent-kernel"}}}`,
			"Booted kernel:     0123456789abcdef… (what Kiln served: kernel kiln-agent-kernel)", ""},
		{`{"tpm":{"attestation":"warned","measurements":{"kernel":"feedface"}}}`,
			"Booted kernel:     feedface (not checked against Kiln's artifacts)", ""},
		{`{"tpm":{"attestation":"ok","measurements":{"kernel":"ab","kernelArtifact":"kernel x\u001b[2J"}}}`, "kernel x", "\x1b"},
		{`{"tpm":{"attestation":"ok"}}`, "Attestation:       ok", "Booted kernel"},
	} {
		var b bytes.Buffer
		printAttestation(&b, []byte(c.status))
		if !strings.Contains(b.String(), c.want) || c.notWant != "" && strings.Contains(b.String(), c.notWant) {
			t.Errorf("status %s:\n%s\nwant %q, not %q", c.status, b.String(), c.want, c.notWant)
		}
	}
}
