package inventory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Roles decide who may open a way to a secret's value. An operator manages the
// inventory but never reaches a value: a join token that could enroll a host into
// a secret, or a BMC that would be sent a credential, is the admin's to make (the
// README's role table).

// ForbiddenError is a change the caller's role may not make: the API answers 403.
type ForbiddenError struct{ Err error }

func (e *ForbiddenError) Error() string { return e.Err.Error() }
func (e *ForbiddenError) Unwrap() error { return e.Err }

// mayReachSecrets reports whether actor may make changes that lead to secret
// values. Kiln's own actors (no role) and admins may.
func mayReachSecrets(a Actor) bool {
	return a.Role == "" || a.Role == store.RoleAdmin
}

// authorizeChange refuses, for a role below admin, a change to next (cur is the
// stored object, nil for a new one) that would open a way to a secret value.
func authorizeChange(ctx context.Context, tx store.Tx, actor Actor, next, cur *resource.Object) error {
	if mayReachSecrets(actor) {
		return nil
	}
	var why string
	var err error
	switch next.Kind {
	case "JoinToken":
		spec, terr := resource.Typed[resource.JoinTokenSpec](next)
		if terr != nil {
			return nil // validation reports it
		}
		why, err = TokenReachesSecrets(ctx, tx, spec.Profile, spec.Labels, spec.Machine)
	case "Machine":
		if why, err = bmcChangeReachesSecret(next, cur); why == "" && err == nil {
			why, err = machineNewlySelected(ctx, tx, next, cur)
		}
		if why == "" && err == nil {
			why, err = tpmPinChangeReachesSecret(ctx, tx, next, cur)
		}
	case "Secret":
		why = releaseRulesChanged(next, cur)
	}
	if err != nil {
		return fmt.Errorf("check what %s %q reaches: %w", lower(next.Kind), next.Metadata.Name, err)
	}
	if why != "" {
		return &ForbiddenError{Err: fmt.Errorf("%s %q: role %s may not do this, admin only: %s", lower(next.Kind), next.Metadata.Name, actor.Role, why)}
	}
	return nil
}

// bmcChangeReachesSecret: a BMC that uses a credential is sent that credential, so
// whoever sets its address (or what proves the address, or which credential) chooses
// where the credential goes.
func bmcChangeReachesSecret(next, cur *resource.Object) (string, error) {
	nb := machineBMC(next)
	if nb == nil || nb.CredentialsSecret == "" {
		return "", nil
	}
	if cb := machineBMC(cur); cb != nil && cb.Driver == nb.Driver && cb.Address == nb.Address &&
		cb.CredentialsSecret == nb.CredentialsSecret && cb.CAFingerprint == nb.CAFingerprint {
		return "", nil
	}
	return fmt.Sprintf("spec.bmc uses the credentials in secret %q: setting or changing its driver, address, caFingerprint or credentialsSecret decides where that credential is sent", nb.CredentialsSecret), nil
}

func machineBMC(o *resource.Object) *resource.BMC {
	if o == nil {
		return nil
	}
	spec, err := resource.Typed[resource.MachineSpec](o)
	if err != nil {
		return nil
	}
	return spec.BMC
}

// TokenReachesSecrets says why a join token for profile, with labels and bound to
// machine (may be ""), could let the host that enrolls with it receive a secret: the
// profile refers to secrets, or a Secret's release rules select the labels or the
// machine (or the machine as it stands: its labels and profile). "" if none can.
func TokenReachesSecrets(ctx context.Context, tx store.Tx, profile string, labels map[string]string, machine string) (string, error) {
	profiles := []string{profile}
	names := []string{}
	labelSets := []map[string]string{labels}
	if machine != "" {
		names = append(names, machine)
		m, err := tx.Get(ctx, "Machine", machine)
		switch {
		case err == nil:
			labelSets = append(labelSets, m.Metadata.Labels)
			if spec, err := resource.Typed[resource.MachineSpec](m); err == nil && spec.Profile != "" {
				profiles = append(profiles, spec.Profile)
			}
		case !errors.Is(err, store.ErrNotFound):
			return "", err
		}
	}
	for _, p := range profiles {
		if p == "" {
			continue
		}
		obj, err := tx.Get(ctx, "Profile", p)
		if errors.Is(err, store.ErrNotFound) {
			continue // references are checked elsewhere
		}
		if err != nil {
			return "", err
		}
		spec, err := resource.Typed[resource.ProfileSpec](obj)
		if err == nil && len(spec.Secrets) > 0 {
			return fmt.Sprintf("profile %q refers to secrets (%s)", p, strings.Join(spec.Secrets, ", ")), nil
		}
	}
	return firstSecret(ctx, tx, func(name string, spec *resource.SecretSpec) string {
		for _, n := range names {
			if slices.Contains(spec.Machines, n) {
				return fmt.Sprintf("secret %q is released to machine %q", name, n)
			}
		}
		for _, l := range labelSets {
			if selects(spec.Labels, l) {
				return fmt.Sprintf("secret %q is released to labels %s", name, labelString(spec.Labels))
			}
		}
		return ""
	})
}

// firstSecret walks every Secret and returns the first reason fn gives.
func firstSecret(ctx context.Context, tx store.Tx, fn func(name string, spec *resource.SecretSpec) string) (string, error) {
	cont := ""
	for {
		secrets, next, err := tx.List(ctx, "Secret", store.ListOptions{Limit: 500, Continue: cont})
		if err != nil {
			return "", err
		}
		for _, o := range secrets {
			spec, err := resource.Typed[resource.SecretSpec](o)
			if err != nil {
				continue
			}
			if why := fn(o.Metadata.Name, spec); why != "" {
				return why, nil
			}
		}
		if next == "" {
			return "", nil
		}
		cont = next
	}
}

// machineNewlySelected: a machine that a Secret's release rules select after the
// change and did not before (a new machine: did not exist) would receive that
// secret once enrolled, or at once if it is.
func machineNewlySelected(ctx context.Context, tx store.Tx, next, cur *resource.Object) (string, error) {
	return firstSecret(ctx, tx, func(name string, spec *resource.SecretSpec) string {
		if releasedTo(spec, next) && (cur == nil || !releasedTo(spec, cur)) {
			return fmt.Sprintf("secret %q would be released to machine %q (its spec.machines or spec.labels select it)", name, next.Metadata.Name)
		}
		return ""
	})
}

// releaseRulesChanged: who may receive an existing Secret is the admin's to change.
func releaseRulesChanged(next, cur *resource.Object) string {
	if cur == nil {
		return "" // a new Secret has no value yet: its creator sets it
	}
	ns, err1 := resource.Typed[resource.SecretSpec](next)
	cs, err2 := resource.Typed[resource.SecretSpec](cur)
	if err1 != nil || err2 != nil {
		return ""
	}
	if cs.Attested && (!ns.Attested || ns.AttestedMaxAge() > cs.AttestedMaxAge()) {
		return fmt.Sprintf("dropping or lengthening secret %q's spec.attested (attestedWithin) releases its value to machines without a fresh TPM quote", next.Metadata.Name)
	}
	if slices.Equal(ns.Machines, cs.Machines) && maps.Equal(ns.Labels, cs.Labels) {
		return ""
	}
	return fmt.Sprintf("changing secret %q's spec.machines or spec.labels changes who receives its value", next.Metadata.Name)
}

// tpmPinChangeReachesSecret: a machine's spec.tpm.ekSHA256 decides which TPM may
// enroll as it; changing it, for a machine a Secret is released to (or whose
// profile refers to secrets), hands that machine's secrets to another TPM.
func tpmPinChangeReachesSecret(ctx context.Context, tx store.Tx, next, cur *resource.Object) (string, error) {
	pin := func(o *resource.Object) string {
		if o == nil {
			return ""
		}
		s, err := resource.Typed[resource.MachineSpec](o)
		if err != nil || s.TPM == nil {
			return ""
		}
		return s.TPM.EKSHA256
	}
	if cur == nil || pin(next) == pin(cur) {
		return "", nil
	}
	spec, err := resource.Typed[resource.MachineSpec](next)
	if err != nil {
		return "", nil
	}
	why, err := TokenReachesSecrets(ctx, tx, spec.Profile, next.Metadata.Labels, next.Metadata.Name)
	if why == "" || err != nil {
		return "", err
	}
	return "changing spec.tpm.ekSHA256 decides which TPM enrolls as the machine, and " + why, nil
}

// releasedTo is secrets.Allowed (which this package cannot import): m is named in
// spec.machines, or spec.labels is not empty and all among m's labels.
func releasedTo(spec *resource.SecretSpec, m *resource.Object) bool {
	return slices.Contains(spec.Machines, m.Metadata.Name) || selects(spec.Labels, m.Metadata.Labels)
}

// selects is a Secret's label rule (see secrets.Allowed): not empty, and every one of
// its labels among have.
func selects(rule, have map[string]string) bool {
	if len(rule) == 0 {
		return false
	}
	for k, v := range rule {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func labelString(l map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}
