// Package role names the roles an API token carries. It is a leaf so that the CLI can
// name a role without importing the store, which keeps the tokens.
package role

// Roles, from most to least privileged.
const (
	Admin    = "admin"
	Operator = "operator"
	Viewer   = "viewer"
)

// Allows reports whether a token with role have may do what needs role need: each
// role may do all that the roles below it may. need is one of the roles above; a
// have that is none of them ranks below all three.
func Allows(have, need string) bool { return rank(have) >= rank(need) }

func rank(r string) int {
	switch r {
	case Viewer:
		return 1
	case Operator:
		return 2
	case Admin:
		return 3
	}
	return 0
}
