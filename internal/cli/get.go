package cli

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/safetext"
	"github.com/kilnhq/kiln/internal/watch"
)

// target is what a command acts on, as kubectl reads its arguments: a kind and the
// names given (none: every object of the kind, or those a selector picks).
type target struct {
	kind  *resource.Kind
	names []string
}

// parseTargets reads KIND, KIND NAME..., KIND1,KIND2 and TYPE/NAME... (what
// `kiln get -o name` prints, so that `| xargs kiln delete` works), in the order given.
func parseTargets(args []string) ([]target, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("give a kind:\n%s", kindTable())
	}
	var out []target
	add := func(k *resource.Kind, names ...string) {
		for i := range out {
			if out[i].kind == k {
				out[i].names = append(out[i].names, names...)
				return
			}
		}
		out = append(out, target{kind: k, names: names})
	}
	if strings.Contains(args[0], "/") {
		for _, a := range args {
			kind, name, ok := strings.Cut(a, "/")
			if !ok || name == "" {
				return nil, fmt.Errorf("%q: give every argument as TYPE/NAME, or KIND NAME...", a)
			}
			k, err := kindArg(kind)
			if err != nil {
				return nil, err
			}
			add(k, name)
		}
		return out, nil
	}
	kinds := strings.Split(args[0], ",")
	if len(kinds) > 1 && len(args) > 1 {
		return nil, fmt.Errorf("%s: names go with one kind (or give them as TYPE/NAME)", args[0])
	}
	for _, kn := range kinds {
		k, err := kindArg(kn)
		if err != nil {
			return nil, err
		}
		add(k)
	}
	for _, n := range args[1:] {
		if strings.Contains(n, "/") {
			return nil, fmt.Errorf("%q: a TYPE/NAME cannot follow a kind", n)
		}
		out[0].names = append(out[0].names, n)
	}
	return out, nil
}

// oneTarget is the one object KIND NAME or TYPE/NAME names.
func oneTarget(args []string) (*resource.Kind, string, error) {
	ts, err := parseTargets(args)
	if err != nil {
		return nil, "", err
	}
	if len(ts) != 1 || len(ts[0].names) != 1 {
		return nil, "", fmt.Errorf("give one object: KIND NAME or TYPE/NAME")
	}
	return ts[0].kind, ts[0].names[0], nil
}

// listObjects fetches every object of kind k (that selector picks), chunk a page.
func listObjects(cmd *cobra.Command, g *globalFlags, k *resource.Kind, selector string, chunk int) ([]*resource.Object, error) {
	var items []*resource.Object
	cont := ""
	for {
		q := url.Values{"limit": {strconv.Itoa(chunk)}}
		if selector != "" {
			q.Set("labelSelector", selector)
		}
		if cont != "" {
			q.Set("continue", cont)
		}
		var page api.ListResponse
		if err := call(cmd, g, http.MethodGet, "/api/v1/"+k.Plural, q, nil, &page); err != nil {
			return nil, err
		}
		items = append(items, page.Items...)
		if page.Continue == "" {
			return items, nil
		}
		cont = page.Continue
	}
}

// getObject fetches one object; a missing one's error suggests near names.
func getObject(cmd *cobra.Command, g *globalFlags, k *resource.Kind, name string) (*resource.Object, error) {
	var obj resource.Object
	if err := call(cmd, g, http.MethodGet, objectPath(k, name), nil, nil, &obj); err != nil {
		return nil, withNearNames(cmd, g, k, name, err)
	}
	return &obj, nil
}

// printOptions say how printObjects prints.
type printOptions struct {
	output     string // table, wide, yaml, json, name
	single     bool   // one object asked for by name: JSON of it, not a list
	noHeaders  bool
	showLabels bool
	sortBy     string // a field path, .metadata.name or {.status.state}
}

func newGetCmd(g *globalFlags) *cobra.Command {
	var (
		selector string
		chunk    int
		opts     printOptions
		watching bool
	)
	cmd := &cobra.Command{
		Use:   "get KIND [NAME...] | KIND1,KIND2 | TYPE/NAME...",
		Short: "List objects of some kinds, or show some by name",
		Example: `  kiln get machines
  kiln get machines -l rack=r1 -o wide --sort-by .status.state
  kiln get machine web-1 web-2 -o yaml
  kiln get machines,profiles
  kiln get machines -o name | xargs kiln delete
  kiln get machines -l rack=r1 -w`,
		ValidArgsFunction: completeKindsAndNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			targets, err := parseTargets(args)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if watching {
				if len(targets) != 1 || len(targets[0].names) > 0 {
					return fmt.Errorf("-w: watch one kind (kiln get machines -w), not names or several kinds")
				}
				return watchObjects(cmd, g, targets[0].kind, selector, opts)
			}
			var all []*resource.Object
			names := 0
			for _, t := range targets {
				names += len(t.names)
				if len(t.names) > 0 && selector != "" {
					return fmt.Errorf("-l: a selector cannot be combined with names")
				}
			}
			printed := 0
			for _, t := range targets {
				var items []*resource.Object
				if len(t.names) == 0 {
					if items, err = listObjects(cmd, g, t.kind, selector, chunk); err != nil {
						return err
					}
				}
				for _, n := range t.names {
					obj, err := getObject(cmd, g, t.kind, n)
					if err != nil {
						return err
					}
					items = append(items, obj)
				}
				if err := sortObjects(items, opts.sortBy); err != nil {
					return err
				}
				switch opts.output {
				case "json", "yaml":
					all = append(all, items...) // one document for every kind
					continue
				}
				if len(targets) > 1 && len(items) == 0 {
					continue // kubectl too says nothing of an empty kind among several
				}
				if printed > 0 && (opts.output == "table" || opts.output == "wide") {
					fmt.Fprintln(w) // one table per kind, a blank line apart
				}
				printed++
				if err := printObjects(w, t.kind, items, opts); err != nil {
					return err
				}
			}
			if opts.output == "json" || opts.output == "yaml" {
				o := opts
				o.single = names == 1 && len(targets) == 1
				return printObjects(w, nil, all, o)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&selector, "selector", "l", "", "label selector: key=value, key!=value, key in (a,b), key, !key")
	outputFlag(f, &opts.output, "output format: table, wide (more columns), yaml, json, name", "table", "wide", "yaml", "json", "name")
	f.IntVar(&chunk, "chunk-size", 500, "objects fetched per API request")
	f.BoolVarP(&watching, "watch", "w", false, "after listing, print every change (added, modified, deleted) as it happens; reconnects by itself")
	f.BoolVar(&opts.noHeaders, "no-headers", false, "print tables without the header line")
	f.BoolVar(&opts.showLabels, "show-labels", false, "add a LABELS column to tables")
	f.StringVar(&opts.sortBy, "sort-by", "", "sort by this field: .metadata.name, .metadata.createdAt, .spec.profile, .status.state, ... ({.x.y} as kubectl's JSONPath also works)")
	return cmd
}

// watchObjects prints the objects of kind k that selector picks, then each write
// to one of them, until interrupted. When the server lost the history after the
// last change seen (410), it lists again.
func watchObjects(cmd *cobra.Command, g *globalFlags, k *resource.Kind, selector string, opts printOptions) error {
	c, err := newClient(g)
	if err != nil {
		return err
	}
	q := url.Values{}
	if selector != "" {
		q.Set("labelSelector", selector)
	}
	w := cmd.OutOrStdout()
	printed := 0
	for {
		err := c.follow(cmdContext(cmd), "/api/v1/"+k.Plural, q, "", func(m watch.Received) error {
			var obj resource.Object
			if err := json.Unmarshal([]byte(m.Data), &obj); err != nil {
				return fmt.Errorf("decode a %s of the watch: %w", m.Event, err)
			}
			o := opts
			o.noHeaders = opts.noHeaders || printed > 0
			o.single = true
			if opts.output == "yaml" && printed > 0 {
				fmt.Fprintln(w, "---")
			}
			if opts.output == "json" {
				// One object per line: a stream a program reads line by line.
				b, err := json.Marshal(&obj)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "%s\n", b)
			} else if err := printObjects(w, k, []*resource.Object{&obj}, o); err != nil {
				return err
			}
			printed++
			return nil
		})
		if errors.Is(err, errStreamGone) {
			continue // list again: the snapshot comes first
		}
		return err
	}
}

// sortObjects orders items by the field at path (stable; objects without it last).
func sortObjects(items []*resource.Object, path string) error {
	if path == "" {
		return nil
	}
	p := strings.TrimPrefix(strings.TrimSuffix(strings.TrimPrefix(path, "{"), "}"), ".")
	if p == "" || strings.ContainsAny(p, "[]*@?") {
		return fmt.Errorf("--sort-by: %q is not a field path like .metadata.name or .status.state", path)
	}
	type keyed struct {
		key string
		num *float64
		obj *resource.Object
	}
	ks := make([]keyed, len(items))
	for i, o := range items {
		v := columnValue(objectGeneric(o), p)
		ks[i] = keyed{key: v, obj: o}
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			ks[i].num = &n
		}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		if (a.key == "<none>") != (b.key == "<none>") {
			if a.key == "<none>" {
				return 1
			}
			return -1
		}
		if a.num != nil && b.num != nil {
			return cmp.Compare(*a.num, *b.num)
		}
		return strings.Compare(a.key, b.key)
	})
	for i := range ks {
		items[i] = ks[i].obj
	}
	return nil
}

// printObjects prints items of kind k (nil for a mix of kinds, in JSON and YAML).
func printObjects(w io.Writer, k *resource.Kind, items []*resource.Object, opts printOptions) error {
	switch opts.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if opts.single && len(items) == 1 {
			return enc.Encode(items[0])
		}
		if items == nil {
			items = []*resource.Object{}
		}
		// kind: List and items, as kubectl's, so that it re-applies as it is.
		return enc.Encode(map[string]any{"apiVersion": "kiln.dev/v1", "kind": "List", "items": items})
	case "yaml":
		for i, o := range items {
			if i > 0 {
				fmt.Fprintln(w, "---")
			}
			b, err := objectYAML(o)
			if err != nil {
				return err
			}
			w.Write(b)
		}
		return nil
	case "name":
		for _, o := range items {
			fmt.Fprintf(w, "%s/%s\n", strings.ToLower(o.Kind), o.Metadata.Name)
		}
		return nil
	}
	if len(items) == 0 {
		fmt.Fprintf(w, "No %s found.\n", k.Plural)
		return nil
	}
	cols := k.Columns
	if opts.output == "wide" {
		cols = slices.Concat(k.Columns, k.WideColumns)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	if !opts.noHeaders {
		head := []string{"NAME"}
		for _, c := range cols {
			head = append(head, c.Header)
		}
		head = append(head, "AGE")
		if opts.showLabels {
			head = append(head, "LABELS")
		}
		fmt.Fprintln(tw, strings.Join(head, "\t"))
	}
	now := time.Now()
	for _, o := range items {
		row := []string{o.Metadata.Name}
		generic := objectGeneric(o)
		for _, c := range cols {
			v := columnValue(generic, c.Path)
			if o.Kind == "Workflow" && c.Path == "status.state" {
				v = workflowState(v, columnValue(generic, "status.message"))
			}
			// Columns can carry text machines reported: escaped, it cannot drive the
			// terminal or fake a row.
			row = append(row, safetext.Escape(v))
		}
		age := "<unknown>"
		if o.Metadata.CreatedAt != nil {
			age = humanAge(now.Sub(*o.Metadata.CreatedAt))
		}
		row = append(row, age)
		if opts.showLabels {
			row = append(row, safetext.Escape(labelString(o.Metadata.Labels)))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func newDeleteCmd(g *globalFlags) *cobra.Command {
	var selector string
	var cascade bool
	cmd := &cobra.Command{
		Use:   "delete KIND NAME... | TYPE/NAME... | KIND -l SELECTOR",
		Short: "Delete objects (refused while other objects refer to them)",
		Example: `  kiln delete machine web-1 web-2
  kiln delete machine/web-1 profile/old
  kiln delete machines -l rack=r9
  kiln delete machine web-1 --cascade
  kiln get machines -l rack=r9 -o name | xargs kiln delete`,
		ValidArgsFunction: completeKindsAndNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			targets, err := parseTargets(args)
			if err != nil {
				return err
			}
			for _, t := range targets {
				names := t.names
				switch {
				case selector != "" && len(names) > 0:
					return errors.New("-l: a selector cannot be combined with names")
				case selector != "":
					items, err := listObjects(cmd, g, t.kind, selector, 500)
					if err != nil {
						return err
					}
					for _, o := range items {
						names = append(names, o.Metadata.Name)
					}
					if len(names) == 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "No %s match %s.\n", t.kind.Plural, selector)
					}
				case len(names) == 0:
					// kubectl refuses too: deleting a whole kind takes a selector.
					return fmt.Errorf("%s: give names, TYPE/NAME or -l SELECTOR", t.kind.Plural)
				}
				var q url.Values
				if cascade {
					q = url.Values{"cascade": {"true"}}
				}
				for _, name := range names {
					if err := call(cmd, g, http.MethodDelete, objectPath(t.kind, name), q, nil, nil); err != nil {
						if ae, ok := errors.AsType[*APIError](err); ok && t.kind.Name == "Machine" && !cascade && strings.Contains(ae.Message, `workflow "`) {
							ae.Message += fmt.Sprintf(" (kiln delete machine %s --cascade deletes its workflows too)", name)
						}
						return withNearNames(cmd, g, t.kind, name, err)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s/%s deleted\n", strings.ToLower(t.kind.Name), name)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "delete the objects of the kind this label selector picks")
	cmd.Flags().BoolVar(&cascade, "cascade", false, "also delete what belongs to the object (a machine's workflows), in the same transaction")
	return cmd
}

// workflowState is how a workflow's state reads to an operator: one ended by a newer
// workflow or by kiln machine cancel is "superseded" or "cancelled", not "failed"
// (its stored state, the only end the agent knows besides success and timeout).
func workflowState(state, message string) string {
	if state != "failed" {
		return state
	}
	switch {
	case strings.HasPrefix(message, "superseded"):
		return "superseded"
	case strings.HasPrefix(message, inventory.CancelledMessage):
		return "cancelled"
	}
	return state
}
