package secrets

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

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

// releasable reads secret name and checks that machine m may receive it; it returns
// the secret's newest version (still encrypted).
func releasable(ctx context.Context, tx store.Tx, name string, m *resource.Object) (*store.SecretVersion, error) {
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
	v, err := tx.GetSecretVersion(ctx, name, 0)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("secret %q has no value yet (kiln secret set %s): %w", name, name, store.ErrNotFound)
	}
	return v, err
}
