package cli

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/role"
	"github.com/kilnhq/kiln/internal/safetext"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/watch"
)

func newApplyCmd(g *globalFlags) *cobra.Command {
	var files []string
	var recursive, dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update objects from YAML manifests, all in one transaction",
		Long: `Create or update every object in the given manifests. The whole apply is one
transaction: if any document is invalid or refused, nothing is written.
Applying the same manifests again changes nothing (and audits nothing).`,
		Example: "  kiln apply -f examples/\n  kiln apply -f examples/ --dry-run\n  kiln get machines -o yaml | kiln apply -f -",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(files) == 0 {
				return fmt.Errorf("-f: give at least one file, directory or - for standard input")
			}
			objs, err := readManifests(files, recursive, cmd.InOrStdin())
			if err != nil {
				return err
			}
			if len(objs) == 0 {
				return fmt.Errorf("no objects found in %s", strings.Join(files, ", "))
			}
			raws := make([]json.RawMessage, len(objs))
			for i, o := range objs {
				raws[i], _ = json.Marshal(o)
			}
			var resp api.ApplyResponse
			if err := call(cmd, g, http.MethodPost, "/api/v1/apply", nil, api.ApplyRequest{Objects: raws, DryRun: dryRun}, &resp); err != nil {
				return err
			}
			for _, w := range resp.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "Warning:", w)
			}
			if dryRun && !resp.DryRun {
				// An older server ignored dryRun: say so rather than pretend.
				return errors.New("--dry-run: the server does not support dry runs, and applied the manifests")
			}
			for _, r := range resp.Results {
				if !dryRun {
					fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", strings.ToLower(r.Kind), r.Name, r.Outcome)
					continue
				}
				line := fmt.Sprintf("%s/%s %s (server dry run)", strings.ToLower(r.Kind), r.Name, r.Outcome)
				if r.Summary != "" && r.Outcome != "created" {
					line += ": " + r.Summary
				}
				fmt.Fprintln(cmd.OutOrStdout(), line)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory (*.yaml, *.yml, *.json) or - for standard input; repeatable")
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "read directories recursively")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check everything on the server (validation, references, conflicts) and print what would change; write nothing")
	return cmd
}

// readManifests parses every document of every source; the first error stops it.
func readManifests(sources []string, recursive bool, stdin io.Reader) ([]*resource.Object, error) {
	var objs []*resource.Object
	for _, src := range sources {
		if src == "-" {
			o, err := resource.ParseManifests(stdin, "<stdin>")
			if err != nil {
				return nil, err
			}
			objs = append(objs, o...)
			continue
		}
		paths, err := manifestFiles(src, recursive)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			o, err := resource.ParseManifests(f, p)
			f.Close()
			if err != nil {
				return nil, err
			}
			objs = append(objs, o...)
		}
	}
	return objs, nil
}

func manifestFiles(src string, recursive bool) ([]string, error) {
	st, err := os.Stat(src)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{src}, nil
	}
	var out []string
	err = filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != src && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

func kindArg(s string) (*resource.Kind, error) {
	k, ok := resource.LookupKind(s)
	if !ok {
		var names []string
		near, best := "", 3
		for _, k := range resource.Kinds() {
			names = append(names, k.Plural)
			for _, n := range append([]string{k.Plural}, k.Aliases...) {
				if d := editDistance(strings.ToLower(s), n); d < best && isNearName(strings.ToLower(s), n) {
					near, best = k.Plural, d
				}
			}
		}
		if near != "" {
			return nil, fmt.Errorf("unknown kind %q; did you mean %s? (kinds: %s)", s, near, strings.Join(names, ", "))
		}
		return nil, fmt.Errorf("unknown kind %q (one of %s)", s, strings.Join(names, ", "))
	}
	return k, nil
}

// kindTable lists the kinds with their aliases, as kubectl api-resources does.
func kindTable() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tALIASES\tKIND\tWRITABLE")
	for _, k := range resource.Kinds() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\n", k.Plural, strings.Join(k.Aliases, ","), k.Name, !k.ReadOnly)
	}
	tw.Flush()
	return b.String()
}

func objectPath(k *resource.Kind, name string) string {
	return "/api/v1/" + k.Plural + "/" + url.PathEscape(name)
}

// objectGeneric is the object as plain maps and lists with integers kept integral, so
// that YAML output re-applies unchanged.
func objectGeneric(o *resource.Object) map[string]any {
	b, _ := json.Marshal(o)
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var v map[string]any
	_ = dec.Decode(&v)
	return fixNumbers(v).(map[string]any)
}

func fixNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = fixNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = fixNumbers(e)
		}
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// objectYAML renders an object with its fields in manifest order.
func objectYAML(o *resource.Object) ([]byte, error) {
	g := objectGeneric(o)
	doc := struct {
		APIVersion any `yaml:"apiVersion"`
		Kind       any `yaml:"kind"`
		Metadata   any `yaml:"metadata"`
		Spec       any `yaml:"spec,omitempty"`
		Status     any `yaml:"status,omitempty"`
	}{g["apiVersion"], g["kind"], g["metadata"], g["spec"], g["status"]}
	return marshalYAML(doc)
}

// marshalYAML indents by two spaces, as manifests are usually written.
func marshalYAML(v any) ([]byte, error) {
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	enc.Close()
	return []byte(b.String()), nil
}

func columnValue(v any, path string) string {
	for _, p := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			if p == "#" {
				return strconv.Itoa(len(x))
			}
			i, err := strconv.Atoi(p)
			if err != nil || i >= len(x) {
				return "<none>"
			}
			if i == 0 && len(x) > 1 && !strings.Contains(path[strings.Index(path, ".0")+2:], ".") {
				v = x[0]
				continue
			}
			v = x[i]
		default:
			return "<none>"
		}
	}
	switch x := v.(type) {
	case nil:
		return "<none>"
	case string:
		if x == "" {
			return "<none>"
		}
		return x
	case []any:
		// A list of names reads as names (a secret's machines); other lists as a count.
		names := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				names = append(names, s)
			}
		}
		if len(names) == len(x) && len(x) > 0 {
			return strings.Join(names, ",")
		}
		return strconv.Itoa(len(x))
	case map[string]any:
		// A label map (a secret's release rule) reads as a selector.
		if len(x) == 0 {
			return "<none>"
		}
		l := make(map[string]string, len(x))
		for k, e := range x {
			l[k] = fmt.Sprint(e)
		}
		return labelString(l)
	}
	return fmt.Sprint(v)
}

func humanAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func newDescribeCmd(g *globalFlags) *cobra.Command {
	var events int
	var watching bool
	cmd := &cobra.Command{
		Use:               "describe KIND NAME | TYPE/NAME",
		Short:             "Show one object in detail, with a machine's recent events",
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeKindsAndNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, name, err := oneTarget(args)
			if err != nil {
				return err
			}
			args = []string{args[0], name}
			obj, err := getObject(cmd, g, k, name)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Name:              %s\n", obj.Metadata.Name)
			fmt.Fprintf(w, "Kind:              %s\n", obj.Kind)
			fmt.Fprintf(w, "Labels:            %s\n", labelString(obj.Metadata.Labels))
			if t := obj.Metadata.CreatedAt; t != nil {
				fmt.Fprintf(w, "Created:           %s\n", t.Local().Format(time.RFC3339))
			}
			if t := obj.Metadata.UpdatedAt; t != nil {
				fmt.Fprintf(w, "Updated:           %s\n", t.Local().Format(time.RFC3339))
			}
			fmt.Fprintf(w, "Resource version:  %s\n", obj.Metadata.ResourceVersion)
			if k.Name == "Machine" {
				printAttestation(w, obj.Status)
			}
			gen := objectGeneric(obj)
			for _, part := range []string{"spec", "status"} {
				if v, ok := gen[part]; ok && v != nil {
					b, _ := marshalYAML(v)
					fmt.Fprintf(w, "%s%s:\n%s", strings.ToUpper(part[:1]), part[1:], indent(string(b), "  "))
				}
			}
			if k.Name != "Machine" {
				if watching {
					return fmt.Errorf("--watch: only machines have a timeline to follow")
				}
				return nil
			}
			var wf api.WorkflowView
			err = call(cmd, g, http.MethodGet, objectPath(k, args[1])+"/workflow", nil, nil, &wf)
			if err == nil && wf.Status != nil {
				printWorkflow(w, wf)
			} else if ae, ok := err.(*APIError); err != nil && !(ok && ae.Code == http.StatusNotFound) {
				return err
			}
			var evs api.EventList
			q := url.Values{"limit": {strconv.Itoa(events)}}
			if err := call(cmd, g, http.MethodGet, objectPath(k, args[1])+"/events", q, nil, &evs); err != nil {
				return err
			}
			fmt.Fprintln(w, "Events:")
			if len(evs.Items) == 0 {
				fmt.Fprintln(w, "  <none>")
				if !watching {
					return nil
				}
			}
			tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
			// STEP is the time since the previous event: where a boot spends its time.
			if len(evs.Items) > 0 {
				fmt.Fprintln(tw, "  TIME\tSTEP\tTYPE\tMESSAGE")
			}
			var prev *store.Event
			row := func(e store.Event) {
				step := "-"
				if prev != nil {
					step = "+" + formatStep(e.Time.Sub(prev.Time))
				}
				prev = &e
				// Events carry text from machines and anonymous hosts: escaped, it
				// can neither fake a line nor drive the terminal.
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), step, safetext.Escape(e.Type), safetext.Escape(e.Message))
			}
			var lastID int64
			for _, e := range evs.Items {
				row(e)
				lastID = max(lastID, e.ID)
			}
			if err := tw.Flush(); err != nil || !watching {
				return err
			}
			// --watch: the timeline goes on, live, until interrupted.
			c, err := newClient(g)
			if err != nil {
				return err
			}
			head, _ := strconv.ParseInt(evs.ResourceVersion, 10, 64)
			lastID = max(lastID, head)
			for {
				err := c.follow(cmdContext(cmd), "/api/v1/events", url.Values{"machine": {name}}, strconv.FormatInt(lastID, 10), func(m watch.Received) error {
					var e store.Event
					if err := json.Unmarshal([]byte(m.Data), &e); err != nil {
						return fmt.Errorf("decode an event of the stream: %w", err)
					}
					row(e)
					lastID = e.ID
					return tw.Flush()
				})
				if !errors.Is(err, errStreamGone) {
					return err
				}
				// Retention passed what this showed: go on from the log's head.
				var now api.EventList
				if err := c.do(cmdContext(cmd), http.MethodGet, objectPath(k, name)+"/events", url.Values{"limit": {"1"}}, nil, &now); err != nil {
					return err
				}
				fmt.Fprintln(w, "  (events were removed by retention before they were shown)")
				lastID, _ = strconv.ParseInt(now.ResourceVersion, 10, 64)
			}
		},
	}
	cmd.Flags().IntVar(&events, "events", 20, "how many recent events to show")
	cmd.Flags().BoolVarP(&watching, "watch", "w", false, "for a machine: keep printing its events as they happen (reconnects by itself)")
	return cmd
}

// printAttestation shows a TPM-enrolled machine's attestation verdict and the time
// of its last verified quote (status.tpm, written by enrollment and renewal).
func printAttestation(w io.Writer, status json.RawMessage) {
	var st struct {
		TPM *struct {
			EKSHA256    string     `json:"ekSHA256"`
			Attestation string     `json:"attestation"`
			LastQuoteAt *time.Time `json:"lastQuoteAt"`
			Changes     []string   `json:"changes"`
			Measured    *struct {
				Kernel         string `json:"kernel"`
				KernelArtifact string `json:"kernelArtifact"`
			} `json:"measurements"`
		} `json:"tpm"`
	}
	if json.Unmarshal(status, &st) != nil || st.TPM == nil {
		return
	}
	t := st.TPM
	quote := "none yet"
	if t.LastQuoteAt != nil {
		quote = t.LastQuoteAt.Local().Format(time.RFC3339)
	}
	ek := t.EKSHA256
	if len(ek) > 16 {
		ek = ek[:16] + "…"
	}
	fmt.Fprintf(w, "Attestation:       %s (last quote: %s; TPM EK %s)\n", safetext.Escape(cmp.Or(t.Attestation, "none")), quote, safetext.Escape(cmp.Or(ek, "not pinned")))
	if m := t.Measured; m != nil && m.Kernel != "" {
		k := m.Kernel
		if len(k) > 16 {
			k = k[:16] + "…"
		}
		served := "not checked against Kiln's artifacts"
		if m.KernelArtifact != "" {
			served = "what Kiln served: " + m.KernelArtifact
		}
		fmt.Fprintf(w, "Booted kernel:     %s (%s)\n", safetext.Escape(k), safetext.Escape(served))
	}
	for _, c := range t.Changes {
		fmt.Fprintf(w, "                   %s\n", safetext.Escape(c))
	}
}

func formatStep(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// printAudit prints audit entries as a table (with the object column or not) or JSON.
func printAudit(w io.Writer, items []audit.Entry, output string, withObject bool) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if items == nil {
			items = []audit.Entry{}
		}
		return enc.Encode(map[string]any{"items": items})
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	head := "SEQ\tTIME\tACTOR\tACTION\tSUMMARY"
	if withObject {
		head = "SEQ\tTIME\tACTOR\tACTION\tOBJECT\tSUMMARY"
	}
	fmt.Fprintln(tw, head)
	for _, e := range items {
		obj := ""
		if withObject {
			obj = safetext.Escape(strings.ToLower(e.Kind)+"/"+e.Name) + "\t"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s%s\n", e.Seq, e.Time.Local().Format("2006-01-02 15:04:05"), safetext.Escape(e.Actor), safetext.Escape(e.Action), obj, safetext.Escape(e.Summary))
	}
	return tw.Flush()
}

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return "<none>"
	}
	keys := slices.Sorted(maps.Keys(l))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

func indent(s, pfx string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pfx + l
		}
	}
	return strings.Join(lines, "")
}

func newAPITokenCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "api-token", Short: "Manage operator API tokens (admin)"}
	var tokenRole, name string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token; it is printed once and only its hash is stored",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.APITokenCreated
			if err := call(cmd, g, http.MethodPost, "/api/v1/apitokens", nil, api.APITokenRequest{Name: name, Role: tokenRole}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created API token %s (role %s); it is shown only now:\n", out.ID, out.Role)
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			return nil
		},
	}
	create.Flags().StringVar(&tokenRole, "role", role.Viewer, "role: admin, operator or viewer")
	create.Flags().StringVar(&name, "name", "", "a name to recognise the token by")
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (ids, names, roles; never secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.APITokenList
			if err := call(cmd, g, http.MethodGet, "/api/v1/apitokens", nil, nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED\tREVOKED")
			for _, t := range out.Items {
				rev := "<no>"
				if t.RevokedAt != nil {
					rev = t.RevokedAt.Local().Format(time.RFC3339)
				}
				n := t.Name
				if n == "" {
					n = "<none>"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, n, t.Role, t.CreatedAt.Local().Format(time.RFC3339), rev)
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token; it stops working at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := call(cmd, g, http.MethodDelete, "/api/v1/apitokens/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "api-token/%s revoked\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newAuditCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read and verify the audit log"}
	var after, limit, tail int
	var output, secret string
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit entries, newest last: the newest --tail, or pages --after SEQ (--secret NAME: who received a secret)",
		Example: `  kiln audit list                 # the newest 100 entries, newest last
  kiln audit list --tail 20
  kiln audit list --after 0 --limit 1000   # from the start, a page at a time`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if secret != "" {
				return printSecretAudit(cmd, g, secret, int64(after), int64(limit), output)
			}
			var out api.AuditList
			q := url.Values{"after": {strconv.Itoa(after)}, "limit": {strconv.Itoa(limit)}}
			if !cmd.Flags().Changed("after") {
				q.Set("tail", strconv.Itoa(tail))
			}
			if err := call(cmd, g, http.MethodGet, "/api/v1/audit", q, nil, &out); err != nil {
				return err
			}
			if err := printAudit(cmd.OutOrStdout(), out.Items, output, true); err != nil {
				return err
			}
			// Where the next page starts, on stderr so that pipes see entries only.
			if n := len(out.Items); n > 0 && out.Items[n-1].Seq < out.Head {
				fmt.Fprintf(cmd.ErrOrStderr(), "(%d newer entries: kiln audit list --after %d)\n", out.Head-out.Items[n-1].Seq, out.Items[n-1].Seq)
			}
			return nil
		},
	}
	list.Flags().IntVar(&tail, "tail", 100, "the newest N entries (when --after is not given)")
	list.Flags().IntVar(&after, "after", 0, "page from this sequence number on: entries after it, oldest first")
	list.Flags().IntVar(&limit, "limit", 1000, "with --after: at most this many entries")
	outputFlag(list.Flags(), &output, "output format: table or json", "table", "json")
	list.Flags().StringVar(&secret, "secret", "", "only entries about this secret: versions set, releases (which version, to which machine, by which channel)")
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit hash chain; exits non-zero if an entry was edited, removed or reordered",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.AuditVerifyResponse
			if err := call(cmd, g, http.MethodGet, "/api/v1/audit/verify", nil, nil, &out); err != nil {
				return err
			}
			if !out.OK {
				return fmt.Errorf("audit chain broken after %d good entries: %s", out.Entries, out.Error)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "audit chain OK: %d entries, head %s\n", out.Entries, out.Head)
			return nil
		},
	}
	cmd.AddCommand(list, verify)
	return cmd
}
