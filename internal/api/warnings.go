package api

import (
	"context"
	"fmt"

	"github.com/kilnhq/kiln/internal/resource"
)

// agentArtifactWarnings says, for every profile among objs that boots the agent,
// which of the agent's artifacts exist neither in objs nor in the store: such a
// profile applies (the artifacts may come later, from kiln image build --apply) but
// no machine can boot it yet, which an operator should hear at apply, not at boot.
func (s *Server) agentArtifactWarnings(ctx context.Context, objs []*resource.Object) []string {
	var warnings []string
	for _, o := range objs {
		if o.Kind != "Profile" {
			continue
		}
		ps, err := resource.Typed[resource.ProfileSpec](o)
		if err != nil || !ps.Boot.Agent {
			continue
		}
		warnings = append(warnings, s.missingAgentArtifacts(ctx, o.Metadata.Name, objs)...)
	}
	return warnings
}

func (s *Server) missingAgentArtifacts(ctx context.Context, profile string, batch []*resource.Object) []string {
	var out []string
	for _, a := range s.AgentArtifacts {
		inBatch := false
		for _, o := range batch {
			inBatch = inBatch || (o.Kind == "Artifact" && o.Metadata.Name == a)
		}
		if inBatch {
			continue
		}
		if _, err := s.Inventory.Get(ctx, "Artifact", a); err != nil {
			out = append(out, fmt.Sprintf("profile %q boots the agent, but artifact %q does not exist: no machine can boot the profile until it does (kiln image build --apply)", profile, a))
		}
	}
	return out
}

// machineWarnings are missingAgentArtifacts for a machine's profile.
func (s *Server) machineWarnings(ctx context.Context, machine string) []string {
	m, err := s.Inventory.Get(ctx, "Machine", machine)
	if err != nil {
		return nil
	}
	ms, err := resource.Typed[resource.MachineSpec](m)
	if err != nil || ms.Profile == "" {
		return nil
	}
	p, err := s.Inventory.Get(ctx, "Profile", ms.Profile)
	if err != nil {
		return nil
	}
	ps, err := resource.Typed[resource.ProfileSpec](p)
	if err != nil || !ps.Boot.Agent {
		return nil
	}
	return s.missingAgentArtifacts(ctx, ms.Profile, nil)
}
