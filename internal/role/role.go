// Package role names the roles an API token carries. It is a leaf so that the CLI can
// name a role without importing the store, which keeps the tokens.
package role

// Roles, from most to least privileged.
const (
	Admin    = "admin"
	Operator = "operator"
	Viewer   = "viewer"
)
