package image

import (
	"fmt"
	"strings"
)

// Artifact names a profile with boot.agent boots (kiln serve --agent-kernel and
// --agent-initrd default to these).
const (
	KernelArtifact = "kiln-agent-kernel"
	InitrdArtifact = "kiln-agent-initrd"
)

// Manifest returns the two Artifact objects (three with a UKI: kiln-agent-uki) of a build as YAML, for `kiln apply -f -`.
// Sources are the files' absolute paths: `kiln serve` serves them when they are in its
// artifact directory (build with --out under it).
func (r *Result) Manifest(kernelName, initrdName string) string {
	if kernelName == "" {
		kernelName = KernelArtifact
	}
	if initrdName == "" {
		initrdName = InitrdArtifact
	}
	var b strings.Builder
	doc := func(name string, f File) {
		fmt.Fprintf(&b, "apiVersion: kiln.dev/v1\nkind: Artifact\nmetadata:\n  name: %s\nspec:\n", name)
		fmt.Fprintf(&b, "  source: %q\n  sha256: %q\n  size: %d\n", f.Path, f.SHA256, f.Size)
		if r.Arch != "" {
			fmt.Fprintf(&b, "  arch: %s\n", r.Arch)
		}
	}
	doc(kernelName, r.Kernel)
	b.WriteString("---\n")
	doc(initrdName, r.Initrd)
	if r.UKI != nil {
		b.WriteString("---\n")
		doc(UKIArtifact, *r.UKI)
	}
	return b.String()
}
