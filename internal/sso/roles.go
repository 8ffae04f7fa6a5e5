package sso

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kilnhq/kiln/internal/role"
)

// ErrNoRole is a person whose groups map to no Kiln role: refused, not let in as
// a viewer, because the provider may hold people (contractors, other teams) who
// should see nothing of the fleet.
var ErrNoRole = errors.New("none of your groups is mapped to a Kiln role")

// maxGroups bounds the groups read from one claim: a provider sends a person's
// groups, not a directory.
const maxGroups = 1000

// claimGroups reads a groups claim: a list of strings (the usual form), or one
// string of space- or comma-separated names (some providers flatten it).
func claimGroups(v any) ([]string, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		return strings.FieldsFunc(x, func(r rune) bool { return r == ' ' || r == ',' }), nil
	case []string:
		if len(x) > maxGroups {
			return nil, fmt.Errorf("more than %d groups", maxGroups)
		}
		return x, nil
	case []any:
		if len(x) > maxGroups {
			return nil, fmt.Errorf("more than %d groups", maxGroups)
		}
		out := make([]string, 0, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("[%d]: a %T, not a group name", i, e)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("a %T, not a list of group names", v)
}

// RoleFor is the role the claims give: the highest role one of whose groups the
// person is in. No matching group is ErrNoRole.
func (c Config) RoleFor(claims map[string]any) (string, error) {
	c = c.withDefaults()
	groups, err := claimGroups(claims[c.RoleClaim])
	if err != nil {
		return "", fmt.Errorf("claim %q: %w", c.RoleClaim, err)
	}
	for _, r := range []string{role.Admin, role.Operator, role.Viewer} {
		for _, g := range c.Roles[r] {
			if slices.Contains(groups, g) {
				return r, nil
			}
		}
	}
	return "", ErrNoRole
}
