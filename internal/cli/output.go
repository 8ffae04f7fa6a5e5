package cli

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// outputFormat is the value of an -o flag: one of a fixed set, checked when the flag
// is parsed, so that `-o bogus` fails before any request instead of falling back to
// a table with exit 0. The same set feeds shell completion.
type outputFormat struct {
	value   *string
	allowed []string
}

// outputFlag adds -o/--output to fs, holding one of allowed (the first is the default).
func outputFlag(fs *pflag.FlagSet, p *string, usage string, allowed ...string) {
	*p = allowed[0]
	fs.VarP(&outputFormat{value: p, allowed: allowed}, "output", "o", usage)
}

func (o *outputFormat) String() string { return *o.value }
func (o *outputFormat) Type() string   { return "format" }

func (o *outputFormat) Set(s string) error {
	if !slices.Contains(o.allowed, s) {
		return fmt.Errorf("unknown output format %s; one of: %s", s, strings.Join(o.allowed, ", "))
	}
	*o.value = s
	return nil
}

// refuseUnknownSubcommands makes every group command (one with subcommands and no
// action of its own) fail on an unknown subcommand, with cobra's suggestions, as the
// root does: without it cobra prints the help and exits 0, so `kiln audit verfy` in a
// cron job would never alert. It also completes every -o flag's formats.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		refuseUnknownSubcommands(c)
	}
	if f := cmd.Flags().Lookup("output"); f != nil {
		if o, ok := f.Value.(*outputFormat); ok {
			_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(o.allowed, cobra.ShellCompDirectiveNoFileComp))
		}
	}
	if cmd.Parent() == nil || !cmd.HasSubCommands() || cmd.Runnable() {
		return
	}
	cmd.SuggestionsMinimumDistance = 2 // cobra's default, which only the root sets for itself
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
		}
		return fmt.Errorf("%s\nRun '%s --help' for usage", msg, cmd.CommandPath())
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
}
