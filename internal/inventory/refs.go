package inventory

import (
	"context"
	"errors"
	"fmt"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// ref is one object's reference to another, with the field that holds it.
type ref struct {
	kind, name, path string
}

// references lists what an object refers to by name.
func references(o *resource.Object) []ref {
	var out []ref
	add := func(kind, name, path string) {
		if name != "" {
			out = append(out, ref{kind, name, path})
		}
	}
	switch o.Kind {
	case "Machine":
		s, err := resource.Typed[resource.MachineSpec](o)
		if err != nil {
			return nil
		}
		add("Profile", s.Profile, "spec.profile")
		if s.BMC != nil {
			add("Secret", s.BMC.CredentialsSecret, "spec.bmc.credentialsSecret")
		}
	case "Profile":
		s, err := resource.Typed[resource.ProfileSpec](o)
		if err != nil {
			return nil
		}
		add("Artifact", s.Boot.Kernel, "spec.boot.kernel")
		for i, n := range s.Boot.Initrds {
			add("Artifact", n, fmt.Sprintf("spec.boot.initrds[%d]", i))
		}
		add("Template", s.Workflow, "spec.workflow")
		for i, n := range s.Secrets {
			add("Secret", n, fmt.Sprintf("spec.secrets[%d]", i))
		}
	case "Workflow":
		s, err := resource.Typed[resource.WorkflowSpec](o)
		if err != nil {
			return nil
		}
		add("Machine", s.Machine, "spec.machine")
		add("Template", s.Template, "spec.template")
	case "JoinToken":
		s, err := resource.Typed[resource.JoinTokenSpec](o)
		if err != nil {
			return nil
		}
		add("Profile", s.Profile, "spec.profile")
	case "Artifact":
		s, err := resource.Typed[resource.ArtifactSpec](o)
		if err != nil || s.Verity == nil {
			return nil
		}
		add("Artifact", s.Verity.HashTree, "spec.verity.hashTree")
	case "Subnet":
		s, err := resource.Typed[resource.SubnetSpec](o)
		if err != nil {
			return nil
		}
		add("Profile", s.DiscoveryProfile, "spec.discoveryProfile")
	case "Webhook":
		s, err := resource.Typed[resource.WebhookSpec](o)
		if err != nil {
			return nil
		}
		add("Secret", s.SecretRef, "spec.secretRef")
	}
	return out
}

// checkReferences refuses an object that names something that does not exist.
func checkReferences(ctx context.Context, tx store.Tx, o *resource.Object) error {
	for _, r := range references(o) {
		_, err := tx.Get(ctx, r.kind, r.name)
		if errors.Is(err, store.ErrNotFound) {
			return &ValidationError{Err: &resource.ObjectError{Kind: o.Kind, Name: o.Metadata.Name,
				Err: fmt.Errorf("%s: %s %q does not exist", r.path, lower(r.kind), r.name)}}
		}
		if err != nil {
			return fmt.Errorf("check %s of %s: %w", r.path, o.Key(), err)
		}
	}
	return nil
}

// referrers are the kinds that can refer to each kind.
var referrers = map[string][]string{
	"Profile":  {"Machine", "JoinToken", "Subnet"},
	"Artifact": {"Profile", "Artifact"},
	"Template": {"Profile", "Workflow"},
	"Secret":   {"Machine", "Profile", "Webhook"},
	"Machine":  {"Workflow"},
}

// checkNotReferenced refuses to delete an object others still name. It reads every
// object of the referring kinds: deletes are rare, boots are not, so no index is kept.
func checkNotReferenced(ctx context.Context, tx store.Tx, o *resource.Object) error {
	for _, kind := range referrers[o.Kind] {
		cont := ""
		for {
			page, next, err := tx.List(ctx, kind, store.ListOptions{Limit: 1000, Continue: cont})
			if err != nil {
				return fmt.Errorf("check references to %s: %w", o.Key(), err)
			}
			for _, other := range page {
				for _, r := range references(other) {
					if r.kind == o.Kind && r.name == o.Metadata.Name {
						return &ValidationError{Err: fmt.Errorf("delete %s %q: %s %q still refers to it (%s)",
							lower(o.Kind), o.Metadata.Name, lower(other.Kind), other.Metadata.Name, r.path)}
					}
				}
			}
			if next == "" {
				break
			}
			cont = next
		}
	}
	return nil
}
