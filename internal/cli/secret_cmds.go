package cli

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/secrets"
)

// maxSecretFileBytes bounds what `secret set --from-file` reads; the server enforces
// its own (smaller, configurable) limit.
const maxSecretFileBytes = 16 << 20

func secretPath(name string, rest ...string) string {
	p := "/api/v1/secrets/" + url.PathEscape(name)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

func newSecretCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Set, inspect and delete secrets; rotate the key that encrypts them",
		Long: `Secrets are encrypted at rest and released only to the machines their release
rules name: spec.machines (machine names) or spec.labels (labels an operator or a
join token set on the machine; facts a machine reports never count). Set the rules
with kiln apply -f on a Secret manifest; set the value with kiln secret set.`,
	}
	cmd.AddCommand(newSecretSetCmd(g), newSecretGetCmd(g), newSecretListCmd(g), newSecretDeleteCmd(g),
		newSecretRotateKeyCmd(g), newSecretAuditCmd(g), newSecretHandleStatusCmd(g))
	return cmd
}

func newSecretSetCmd(g *globalFlags) *cobra.Command {
	var fromFile, fromLiteral string
	cmd := &cobra.Command{
		Use:   "set NAME (--from-file FILE | --from-literal VALUE)",
		Short: "Store a new version of a secret's value (creating the secret if needed)",
		Long: `Store a new version of a secret's value. The secret is created if it does not
exist, with no release rules: no machine receives it until a Secret manifest names
machines or labels.

--from-file - reads standard input. Prefer it to --from-literal, which leaves the value
in the process list and the shell history.`,
		Example: "  kiln secret set db-password --from-file ./db-password\n  pass show db | kiln secret set db-password --from-file -",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			literalSet := cmd.Flags().Changed("from-literal")
			if (fromFile == "") == !literalSet {
				return fmt.Errorf("give exactly one of --from-file or --from-literal")
			}
			var value []byte
			if literalSet {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: --from-literal leaves the value in the process list and the shell history; prefer --from-file -")
				value = []byte(fromLiteral)
			} else {
				var err error
				if value, err = readSecretSource(fromFile, cmd.InOrStdin()); err != nil {
					return err
				}
			}
			defer clear(value)
			if len(value) == 0 {
				return fmt.Errorf("the value is empty")
			}
			var vi secrets.VersionInfo
			body := secrets.SetValueRequest{Value: base64.StdEncoding.EncodeToString(value)}
			if err := call(cmd, g, http.MethodPut, secretPath(args[0], "value"), nil, body, &vi); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "secret/%s version %d set\n", vi.Name, vi.Version)
			return nil
		},
	}
	cmd.Flags().StringVar(&fromFile, "from-file", "", "read the value from this file (- for standard input), byte for byte")
	cmd.Flags().StringVar(&fromLiteral, "from-literal", "", "the value itself (visible in the process list: prefer --from-file -)")
	return cmd
}

func readSecretSource(path string, stdin io.Reader) ([]byte, error) {
	var r io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--from-file: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSecretFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("--from-file %s: %w", path, err)
	}
	if len(b) > maxSecretFileBytes {
		return nil, fmt.Errorf("--from-file %s: larger than %d bytes", path, maxSecretFileBytes)
	}
	return b, nil
}

func newSecretGetCmd(g *globalFlags) *cobra.Command {
	var reveal bool
	var version int64
	var output string
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a secret's release rules and versions; --reveal prints the value (admin role, audited)",
		Example: "  kiln secret get db-password\n" +
			"  kiln secret get db-password --reveal > db-password   # the value, byte for byte",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reveal {
				q := url.Values{}
				if version > 0 {
					q.Set("version", strconv.FormatInt(version, 10))
				}
				var v secrets.ValueResponse
				if err := call(cmd, g, http.MethodGet, secretPath(args[0], "value"), q, nil, &v); err != nil {
					return err
				}
				b, err := base64.StdEncoding.DecodeString(v.Value)
				if err != nil {
					return fmt.Errorf("decode the value from the server: not base64")
				}
				defer clear(b)
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			if version != 0 {
				return fmt.Errorf("--version goes with --reveal")
			}
			var obj resource.Object
			if err := call(cmd, g, http.MethodGet, secretPath(args[0]), nil, nil, &obj); err != nil {
				return err
			}
			var vl secrets.VersionList
			if err := call(cmd, g, http.MethodGet, secretPath(args[0], "versions"), nil, nil, &vl); err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"secret": obj, "versions": vl.Items})
			case "table", "":
			default:
				return fmt.Errorf("-o: %q is not one of table, json", output)
			}
			return printSecret(cmd.OutOrStdout(), &obj, vl.Items)
		},
	}
	cmd.Flags().BoolVar(&reveal, "reveal", false, "print the value itself to standard output (needs the admin role; audited)")
	cmd.Flags().Int64Var(&version, "version", 0, "with --reveal: this version instead of the newest")
	outputFlag(cmd.Flags(), &output, "output format: table or json (never the value)", "table", "json")
	return cmd
}

func printSecret(w io.Writer, obj *resource.Object, versions []secrets.VersionInfo) error {
	spec, err := resource.Typed[resource.SecretSpec](obj)
	if err != nil {
		return err
	}
	none := func(s string) string {
		if s == "" {
			return "<none>"
		}
		return s
	}
	var labels []string
	for k, v := range spec.Labels {
		labels = append(labels, k+"="+v)
	}
	slices.Sort(labels)
	fmt.Fprintf(w, "Name:         %s\n", obj.Metadata.Name)
	if spec.Description != "" {
		fmt.Fprintf(w, "Description:  %s\n", spec.Description)
	}
	fmt.Fprintf(w, "Machines:     %s\n", none(strings.Join(spec.Machines, ", ")))
	fmt.Fprintf(w, "Labels:       %s\n", none(strings.Join(labels, ",")))
	if len(spec.Machines) == 0 && len(spec.Labels) == 0 {
		fmt.Fprintln(w, "              (no release rules: no machine may receive it)")
	}
	if len(versions) == 0 {
		fmt.Fprintln(w, "Versions:     <none> (kiln secret set "+obj.Metadata.Name+" --from-file ...)")
		return nil
	}
	fmt.Fprintln(w, "Versions:")
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "  VERSION\tCREATED\tBY\tKEK")
	for i := len(versions) - 1; i >= 0; i-- {
		v := versions[i]
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", v.Version, v.CreatedAt.Local().Format("2006-01-02 15:04:05"), none(v.CreatedBy), v.KEKID)
	}
	return tw.Flush()
}

func newSecretListCmd(g *globalFlags) *cobra.Command {
	var output, selector string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List secrets with their release rules and newest version (never values)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			k, _ := resource.LookupKind("Secret")
			var items []*resource.Object
			cont := ""
			for {
				q := url.Values{"limit": {"500"}}
				if selector != "" {
					q.Set("labelSelector", selector)
				}
				if cont != "" {
					q.Set("continue", cont)
				}
				var page struct {
					Items    []*resource.Object `json:"items"`
					Continue string             `json:"continue"`
				}
				if err := call(cmd, g, http.MethodGet, "/api/v1/secrets", q, nil, &page); err != nil {
					return err
				}
				items = append(items, page.Items...)
				if page.Continue == "" {
					break
				}
				cont = page.Continue
			}
			return printObjects(cmd.OutOrStdout(), k, items, printOptions{output: output})
		},
	}
	outputFlag(cmd.Flags(), &output, "output format: table, yaml, json, name", "table", "yaml", "json", "name")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector")
	return cmd
}

func newSecretDeleteCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a secret and every version of it (refused while a profile or machine refers to it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := call(cmd, g, http.MethodDelete, secretPath(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "secret/%s deleted\n", args[0])
			return nil
		},
	}
}

func newSecretRotateKeyCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-key",
		Short: "Replace the key-encryption key and re-wrap every secret's data key (admin role)",
		Long: `Generate a new key-encryption key, re-wrap every data key with it in one
transaction, then replace <data-dir>/kek.key. Values are not re-encrypted. With several
replicas, copy the new kek.key to the others and restart them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res secrets.RotationResult
			if err := call(cmd, g, http.MethodPost, "/api/v1/secrets/rotate-key", nil, nil, &res); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key-encryption key rotated: %s -> %s, %d data keys re-wrapped\n", res.OldKEKID, res.NewKEKID, res.Rewrapped)
			return nil
		},
	}
}

func newSecretAuditCmd(g *globalFlags) *cobra.Command {
	var output string
	var after, limit int64
	cmd := &cobra.Command{
		Use:   "audit NAME",
		Short: "Who set, revealed and received a secret: its audit entries, oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return printSecretAudit(cmd, g, args[0], after, limit, output)
		},
	}
	outputFlag(cmd.Flags(), &output, "output format: table or json", "table", "json")
	cmd.Flags().Int64Var(&after, "after", 0, "show entries after this sequence number")
	cmd.Flags().Int64Var(&limit, "limit", 1000, "at most this many entries")
	return cmd
}

// printSecretAudit prints the audit entries about one secret (also behind
// `kiln audit list --secret NAME`).
func printSecretAudit(cmd *cobra.Command, g *globalFlags, name string, after, limit int64, output string) error {
	var out secrets.AuditList
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "limit": {strconv.FormatInt(limit, 10)}}
	if err := call(cmd, g, http.MethodGet, secretPath(name, "audit"), q, nil, &out); err != nil {
		return err
	}
	return printAudit(cmd.OutOrStdout(), out.Items, output, false)
}

func newSecretHandleStatusCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "handle-status ID|URL",
		Short: "Tell whether a single-use secret handle was used, and when (without using it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if i := strings.LastIndex(id, "/secret-handles/"); i >= 0 {
				id = strings.TrimSuffix(id[i+len("/secret-handles/"):], "/status")
			}
			var st secrets.HandleStatus
			if err := call(cmd, g, http.MethodGet, "/secret-handles/"+url.PathEscape(id)+"/status", nil, nil, &st); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Secret:   %s (version %d)\nMachine:  %s\nFor:      %s\nCreated:  %s\nExpires:  %s\n",
				st.Secret, st.Version, st.Machine, st.Channel, st.CreatedAt.Local().Format("2006-01-02 15:04:05"), st.ExpiresAt.Local().Format("2006-01-02 15:04:05"))
			switch {
			case st.Used:
				fmt.Fprintf(w, "Used:     yes, at %s\n", st.UsedAt.Local().Format("2006-01-02 15:04:05.000"))
			case st.Expired:
				fmt.Fprintln(w, "Used:     no (expired)")
			default:
				fmt.Fprintln(w, "Used:     no")
			}
			return nil
		},
	}
}

func newRenderCmd(g *globalFlags) *cobra.Command {
	var kind, part, output string
	cmd := &cobra.Command{
		Use:   "render machine NAME",
		Short: "Show a machine's rendered config as the machine would get it, with secrets masked",
		Example: "  kiln render machine web-1 --kind ignition\n" +
			"  kiln render machine web-1 --kind cloud-init --part user-data\n" +
			"  kiln render machine web-1 --kind file --part ks.cfg",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "machine" && args[0] != "machines" && args[0] != "m" {
				return fmt.Errorf("render: %q: only machines have rendered configs (kiln render machine NAME)", args[0])
			}
			q := url.Values{"kind": {kind}}
			if part != "" {
				q.Set("part", part)
			}
			var out secrets.RenderResponse
			if err := call(cmd, g, http.MethodGet, "/api/v1/render/"+url.PathEscape(args[1]), q, nil, &out); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch output {
			case "json":
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			case "raw":
				_, err := io.WriteString(w, out.Content)
				return err
			case "text", "":
			default:
				return fmt.Errorf("-o: %q is not one of text, raw, json", output)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "# %s config of machine %s (profile %s), secrets masked\n", out.Kind, out.Machine, out.Profile)
			for _, r := range out.Releases {
				fmt.Fprintf(cmd.ErrOrStderr(), "#   secret %s v%d via %s\n", r.Secret, r.Version, r.Via)
			}
			if out.Public && len(out.Releases) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "#   also served over plain HTTP (profile allows it, no secrets)")
			}
			_, err := io.WriteString(w, out.Content)
			if err == nil && !strings.HasSuffix(out.Content, "\n") {
				fmt.Fprintln(w)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "ignition", "config kind: ignition, cloud-init or file")
	cmd.Flags().StringVar(&part, "part", "", "cloud-init part (meta-data, user-data, vendor-data, network-config; default user-data) or file name")
	outputFlag(cmd.Flags(), &output, "output: text (content, with a header on stderr), raw (content only) or json", "text", "raw", "json")
	return cmd
}
