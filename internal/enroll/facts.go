package enroll

import (
	"strings"

	"github.com/kilnhq/kiln/internal/resource"
)

// Reading an agent's self-reported facts.

// FactMACs returns the MAC addresses in an agent's facts, normalized and without
// duplicates: facts.boot_mac first (the interface the machine netbooted from), then
// facts.interfaces[].mac and facts.nics[].mac. Entries that are not MACs are skipped: facts are
// self-reported and may be odd; they only ever narrow what a token can do.
func FactMACs(facts map[string]any) []string {
	var out []string
	seen := map[string]bool{}
	add := func(v any) {
		s, ok := v.(string)
		if !ok || len(out) >= 64 {
			return
		}
		m, err := resource.NormalizeMAC(s)
		if err != nil || seen[m] {
			return
		}
		seen[m] = true
		out = append(out, m)
	}
	add(facts["boot_mac"])
	for _, key := range []string{"interfaces", "nics"} {
		if ifs, ok := facts[key].([]any); ok {
			for _, i := range ifs {
				if im, ok := i.(map[string]any); ok {
					add(im["mac"])
				}
			}
		}
	}
	return out
}

// interfaceName is the reported name of the interface with mac, if it is a plain one.
func interfaceName(facts map[string]any, mac string) string {
	ifs, _ := facts["interfaces"].([]any)
	nics, _ := facts["nics"].([]any)
	for _, i := range append(ifs, nics...) {
		im, _ := i.(map[string]any)
		m, _ := im["mac"].(string)
		if n, err := resource.NormalizeMAC(m); err != nil || n != mac {
			continue
		}
		if name, ok := im["name"].(string); ok && len(name) <= 15 && !strings.ContainsAny(name, "/ \t\n") {
			return name
		}
	}
	return ""
}
