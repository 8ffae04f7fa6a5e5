package cli

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/resource"
)

// Shell completion (cobra's `kiln completion bash|zsh|fish`): kinds, and names asked
// from the server, the way kubectl completes them.

// kindCompletions are the plurals and singular names of every kind.
func kindCompletions() []string {
	var out []string
	for _, k := range resource.Kinds() {
		out = append(out, k.Plural, strings.ToLower(k.Name))
	}
	return out
}

// namesFromServer lists kind k's object names starting with prefix; nothing (no
// error) when the server cannot be asked, as a completion must not fail loudly.
func namesFromServer(cmd *cobra.Command, g *globalFlags, k *resource.Kind, prefix string) []string {
	// Completion runs without the persistent pre-run: bind KILN_* here.
	if bindEnv(cmd.Flags()) != nil {
		return nil
	}
	var page api.ListResponse
	if call(cmd, g, http.MethodGet, "/api/v1/"+k.Plural, url.Values{"limit": {"1000"}}, nil, &page) != nil {
		return nil
	}
	var out []string
	for _, o := range page.Items {
		if strings.HasPrefix(o.Metadata.Name, prefix) {
			out = append(out, o.Metadata.Name)
		}
	}
	return out
}

// completeKindsAndNames completes KIND, then that kind's names (not those already
// given), or TYPE/NAME after a "kind/" prefix.
func completeKindsAndNames(g *globalFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		nofile := cobra.ShellCompDirectiveNoFileComp
		if len(args) == 0 {
			if kind, prefix, ok := strings.Cut(toComplete, "/"); ok {
				k, found := resource.LookupKind(kind)
				if !found {
					return nil, nofile
				}
				var out []string
				for _, n := range namesFromServer(cmd, g, k, prefix) {
					out = append(out, kind+"/"+n)
				}
				return out, nofile
			}
			return kindCompletions(), nofile
		}
		k, ok := resource.LookupKind(args[0])
		if !ok {
			return nil, nofile
		}
		names := slices.DeleteFunc(namesFromServer(cmd, g, k, toComplete), func(n string) bool { return slices.Contains(args[1:], n) })
		return names, nofile
	}
}

// completeNamesOf completes the names of kind as the argument after skip others (a
// machine after `power OP`).
func completeNamesOf(g *globalFlags, kind string, skip int) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) != skip {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		k, _ := resource.LookupKind(kind)
		return namesFromServer(cmd, g, k, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completePower completes `kiln machine power`'s operation, then a machine.
func completePower(g *globalFlags) cobra.CompletionFunc {
	machines := completeNamesOf(g, "Machine", 1)
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return []string{"on", "off", "cycle", "soft-off", "status", "set-boot"}, cobra.ShellCompDirectiveNoFileComp
		}
		return machines(cmd, args, toComplete)
	}
}
