// Package agentwire is what the agent (the code that runs on machines) and the Kiln
// server say to each other: the routes of the agent API, the bodies of enrollment,
// facts, workflow and reports, the workflow and action states, the paths the agent's
// initramfs provides, and the rules both sides apply to action arguments.
//
// The rule, after tailscale's tailcfg: agentwire imports nothing of Kiln, and the
// agent imports nothing of the server but agentwire (and small leaf packages such as
// atomicfile); the server does not import the agent. internal/agent's deps_test.go
// keeps it so. Whatever the two sides must agree on belongs here, once; what only
// one side needs stays on that side.
package agentwire
