package agent

import "github.com/kilnhq/kiln/internal/agentwire"

// Args are an action's arguments; agentwire defines them so that the server checks
// a Template with the same accessors the agent runs it with.
type Args = agentwire.Args
