package inventory

import (
	"encoding/json"
	"fmt"

	"github.com/kilnhq/kiln/internal/resource"
)

// keepRevocation makes a join token's revocation one-way: when the stored token is
// revoked (spec.revoked, by a manifest or by `kiln join-token revoke`), the update
// in keeps spec.revoked true whatever it says. Re-applying an old manifest of the
// token, or one edited back to revoked: false, must not bring a revoked token back
// to life: a token may have leaked, which is why it was revoked; a new one is made
// instead. It returns in unchanged, or a copy with spec.revoked set.
func keepRevocation(cur, in *resource.Object) (*resource.Object, error) {
	if cur.Kind != "JoinToken" {
		return in, nil
	}
	was, err := resource.Typed[resource.JoinTokenSpec](cur)
	if err != nil {
		return nil, objectErr(cur, "read", err)
	}
	if !was.Revoked {
		return in, nil
	}
	spec := map[string]any{}
	if len(in.Spec) > 0 {
		if err := json.Unmarshal(in.Spec, &spec); err != nil {
			return nil, objectErr(in, "update", fmt.Errorf("spec: %w", err))
		}
	}
	if spec["revoked"] == true {
		return in, nil
	}
	spec["revoked"] = true
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, objectErr(in, "update", fmt.Errorf("spec: %w", err))
	}
	out := in.Clone()
	out.Spec = raw
	return out, nil
}
