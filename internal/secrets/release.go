package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Allowed reports whether machine m may receive a secret with these release rules: its
// name is in spec.machines, or spec.labels is not empty and every one of its labels is
// among the machine's metadata.labels. Only metadata.labels count: they are set by an
// operator (or by the join token the machine enrolled with). What the machine reports
// about itself (status.facts) never does, whatever it claims.
func Allowed(spec *resource.SecretSpec, m *resource.Object) bool {
	if spec == nil || m == nil {
		return false
	}
	if slices.Contains(spec.Machines, m.Metadata.Name) {
		return true
	}
	if len(spec.Labels) == 0 {
		return false
	}
	for k, v := range spec.Labels {
		if got, ok := m.Metadata.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// attestationDenied says why machine m may not receive a Secret that requires
// attestation (spec.attested) at now, or "" if it may. The enroll package writes
// status.tpm: the verdict of the machine's last verified quote and its time.
func attestationDenied(spec *resource.SecretSpec, m *resource.Object, now time.Time) string {
	if !spec.Attested {
		return ""
	}
	var st struct {
		TPM struct {
			Attestation string     `json:"attestation"`
			LastQuoteAt *time.Time `json:"lastQuoteAt"`
		} `json:"tpm"`
	}
	if len(m.Status) > 0 {
		_ = json.Unmarshal(m.Status, &st)
	}
	maxAge := spec.AttestedMaxAge()
	switch t := st.TPM; {
	case t.LastQuoteAt == nil:
		return "it requires attestation, and the machine has no verified TPM quote"
	case t.Attestation == "failed":
		return "it requires attestation, and the machine's last TPM quote failed its measured-boot policy"
	case t.Attestation != "ok" && t.Attestation != "warned" && t.Attestation != "unchecked":
		return fmt.Sprintf("it requires attestation, and the machine's attestation is %q", t.Attestation)
	case now.Sub(*t.LastQuoteAt) > maxAge:
		return fmt.Sprintf("it requires a TPM quote younger than %s, and the machine's last is from %s", maxAge, t.LastQuoteAt.UTC().Format(time.RFC3339))
	}
	return ""
}

// deniedError says which secret was refused to which machine, and why.
func deniedError(secret, machine string, spec *resource.SecretSpec) error {
	why := "its spec.machines and spec.labels are empty"
	switch {
	case len(spec.Machines) > 0 && len(spec.Labels) > 0:
		why = "the machine is not in its spec.machines and lacks some of its spec.labels (" + labelList(spec.Labels) + ")"
	case len(spec.Machines) > 0:
		why = "the machine is not in its spec.machines"
	case len(spec.Labels) > 0:
		why = "the machine lacks some of its spec.labels (" + labelList(spec.Labels) + "; only labels set by an operator or a join token count, never reported facts)"
	}
	return fmt.Errorf("secret %q may not be released to machine %q: %s: %w", secret, machine, why, ErrDenied)
}

func labelList(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// releasable reads secret name and checks that machine m may receive it at now (a
// zero now: a release that is not to the machine's OS, where attestation does not
// apply); it returns the secret's newest version (still encrypted).
func releasable(ctx context.Context, tx store.Tx, name string, m *resource.Object, now time.Time) (*store.SecretVersion, error) {
	obj, err := tx.Get(ctx, "Secret", name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("secret %q does not exist: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	spec, err := resource.Typed[resource.SecretSpec](obj)
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	if !Allowed(spec, m) {
		return nil, deniedError(name, m.Metadata.Name, spec)
	}
	if !now.IsZero() {
		if why := attestationDenied(spec, m, now); why != "" {
			return nil, fmt.Errorf("secret %q may not be released to machine %q: %s: %w", name, m.Metadata.Name, why, ErrDenied)
		}
	}
	v, err := tx.GetSecretVersion(ctx, name, 0)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("secret %q has no value yet (kiln secret set %s): %w", name, name, store.ErrNotFound)
	}
	return v, err
}
