package api

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strings"

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

// machineWarnings are what keeps a machine's reprovision from running although the
// workflow started: the agent's artifacts missing (when its profile boots the agent),
// and each artifact the profile boots or the workflow's template writes (args.image,
// args.artifact) whose Artifact does not exist or whose source file is not in the
// artifact directory. Each names the artifact, so the operator knows what to build
// or copy before the machine powers on. template is the reprovision's --template,
// "" for the profile's.
func (s *Server) machineWarnings(ctx context.Context, machine, template string) []string {
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
	if err != nil {
		return nil
	}
	var out []string
	// uses are the artifacts the boot and the workflow need, each with who names it.
	type use struct {
		artifact, by string
		// digest: the action needs the artifact's sha256 (image2disk verifies the
		// image while it writes and refuses one whose digest nobody knows).
		digest bool
		// agent: one of the agent's artifacts, whose absence missingAgentArtifacts
		// already reported in its own words.
		agent bool
	}
	var uses []use
	if ps.Boot.Agent {
		out = append(out, s.missingAgentArtifacts(ctx, ms.Profile, nil)...)
		for _, a := range s.AgentArtifacts {
			uses = append(uses, use{a, fmt.Sprintf("profile %q boots the agent", ms.Profile), false, true})
		}
	}
	if ps.Boot.Kernel != "" {
		uses = append(uses, use{ps.Boot.Kernel, fmt.Sprintf("profile %q (spec.boot.kernel)", ms.Profile), false, false})
	}
	for i, a := range ps.Boot.Initrds {
		uses = append(uses, use{a, fmt.Sprintf("profile %q (spec.boot.initrds[%d])", ms.Profile, i), false, false})
	}
	template = cmp.Or(template, ps.Workflow)
	if t, err := s.Inventory.Get(ctx, "Template", template); template != "" && err == nil {
		if ts, err := resource.Typed[resource.TemplateSpec](t); err == nil {
			for _, a := range ts.Actions {
				for _, key := range []string{"image", "artifact"} {
					// A templated name or a URL names no Artifact object.
					name, ok := a.Args[key].(string)
					if !ok || name == "" || strings.Contains(name, "{{") || strings.Contains(name, "://") {
						continue
					}
					_, pinned := a.Args["sha256"]
					digest := a.Type == "image2disk" && key == "image" && !pinned && a.Args["verify"] != false
					uses = append(uses, use{name, fmt.Sprintf("template %q action %q (args.%s)", template, a.Name, key), digest, false})
				}
			}
		}
	}
	for _, u := range uses {
		obj, err := s.Inventory.Get(ctx, "Artifact", u.artifact)
		if err != nil {
			// Apply and the workflow's start check the others' existence: they are
			// missing only if deleted meanwhile.
			if !u.agent {
				out = append(out, fmt.Sprintf("%s names artifact %q, which does not exist", u.by, u.artifact))
			}
			continue
		}
		as, err := resource.Typed[resource.ArtifactSpec](obj)
		if err != nil {
			continue
		}
		if s.ArtifactSource != nil {
			if err := s.ArtifactSource(as); err != nil {
				out = append(out, fmt.Sprintf("%s names artifact %q: %v: the machine cannot boot or run its workflow until it is there", u.by, u.artifact, err))
			}
		}
		if u.digest && as.SHA256 == "" {
			var st struct {
				SHA256 string `json:"sha256"`
			}
			if json.Unmarshal(obj.Status, &st); st.SHA256 == "" {
				out = append(out, fmt.Sprintf("%s names artifact %q, whose sha256 is neither declared (spec.sha256) nor recorded yet: the agent will refuse to write it; pin spec.sha256", u.by, u.artifact))
			}
		}
	}
	return out
}
