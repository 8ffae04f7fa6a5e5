//go:build !linux

package agent

import "log/slog"

// InitOptions configure RunInit.
type InitOptions struct {
	Logger    *slog.Logger
	AgentArgs []string
	AgentEnv  []string
}

// RunInit is PID 1 of the agent environment, which is Linux.
func RunInit(opts InitOptions) error { return errNotLinux }
