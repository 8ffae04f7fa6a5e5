package cli

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/resource"
)

func newEditCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "edit KIND NAME | TYPE/NAME",
		Short: "Edit an object's YAML in $EDITOR and apply it (refused if it changed meanwhile)",
		Long: `Open the object's YAML, with its resourceVersion, in $KILN_EDITOR, $EDITOR or vi;
when the editor exits the result is applied. If the object changed on the server
meanwhile the update is refused (409) and nothing is written; an unchanged file
changes nothing. Status is Kiln's and is not sent.`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeKindsAndNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, name, err := oneTarget(args)
			if err != nil {
				return err
			}
			if k.ReadOnly {
				return fmt.Errorf("%s objects are written by Kiln only", k.Name)
			}
			obj, err := getObject(cmd, g, k, name)
			if err != nil {
				return err
			}
			obj.Status = nil // Kiln's, never sent back
			before, err := objectYAML(obj)
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "kiln-edit-")
			if err != nil {
				return fmt.Errorf("edit %s/%s: %w", strings.ToLower(k.Name), name, err)
			}
			defer os.RemoveAll(dir)
			path := filepath.Join(dir, strings.ToLower(k.Name)+"-"+name+".yaml")
			if err := os.WriteFile(path, before, 0o600); err != nil {
				return fmt.Errorf("edit %s/%s: %w", strings.ToLower(k.Name), name, err)
			}
			editor := cmp.Or(os.Getenv("KILN_EDITOR"), os.Getenv("EDITOR"), "vi")
			// The editor variable may hold arguments ("code --wait"), as kubectl allows.
			ed := exec.CommandContext(cmdContext(cmd), "sh", "-c", editor+` "$1"`, "kiln-edit", path)
			ed.Stdin, ed.Stdout, ed.Stderr = os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := ed.Run(); err != nil {
				return fmt.Errorf("editor %q: %w", editor, err)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("edit %s/%s: %w", strings.ToLower(k.Name), name, err)
			}
			if bytes.Equal(bytes.TrimSpace(after), bytes.TrimSpace(before)) {
				fmt.Fprintln(cmd.OutOrStdout(), "Edit cancelled, no changes made.")
				return nil
			}
			objs, err := resource.ParseManifests(bytes.NewReader(after), path)
			if err != nil {
				return err
			}
			if len(objs) != 1 || objs[0].Kind != k.Name || objs[0].Metadata.Name != name {
				return fmt.Errorf("edit %s/%s: the file must hold that one object (its kind and name cannot change)", strings.ToLower(k.Name), name)
			}
			edited := objs[0]
			edited.Metadata.ResourceVersion = cmp.Or(edited.Metadata.ResourceVersion, obj.Metadata.ResourceVersion)
			if err := call(cmd, g, http.MethodPut, objectPath(k, name), nil, edited, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s edited\n", strings.ToLower(k.Name), name)
			return nil
		},
	}
}

func newLabelCmd(g *globalFlags) *cobra.Command {
	var overwrite bool
	var selector string
	cmd := &cobra.Command{
		Use:   "label KIND NAME|TYPE/NAME... KEY=VALUE... KEY-...",
		Short: "Set or remove labels of objects (KEY=VALUE sets, KEY- removes)",
		Long: `Set labels (KEY=VALUE) and remove them (KEY-) on objects, as kubectl label does:
changing a label that has another value needs --overwrite. Each object is updated with
its resourceVersion, so a concurrent change is refused, not overwritten.`,
		Example: `  kiln label machine web-1 rack=r2
  kiln label machine/web-1 machine/web-2 role=db --overwrite
  kiln label machines -l rack=r1 tier-`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: completeKindsAndNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Labels are the trailing KEY=VALUE and KEY- arguments.
			i := len(args)
			for i > 0 && (strings.Contains(args[i-1], "=") || strings.HasSuffix(args[i-1], "-")) {
				i--
			}
			objArgs, changes := args[:i], args[i:]
			if len(changes) == 0 {
				return errors.New("give at least one KEY=VALUE or KEY-")
			}
			set, remove := map[string]string{}, []string{}
			for _, c := range changes {
				if key, val, ok := strings.Cut(c, "="); ok {
					set[key] = val
				} else {
					remove = append(remove, strings.TrimSuffix(c, "-"))
				}
			}
			targets, err := parseTargets(objArgs)
			if err != nil {
				return err
			}
			for _, t := range targets {
				names := t.names
				if selector != "" {
					if len(names) > 0 {
						return errors.New("-l: a selector cannot be combined with names")
					}
					items, err := listObjects(cmd, g, t.kind, selector, 500)
					if err != nil {
						return err
					}
					for _, o := range items {
						names = append(names, o.Metadata.Name)
					}
				} else if len(names) == 0 {
					return fmt.Errorf("%s: give names, TYPE/NAME or -l SELECTOR", t.kind.Plural)
				}
				for _, name := range names {
					if err := labelObject(cmd, g, t.kind, name, set, remove, overwrite); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "allow changing a label that already has another value")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label the objects of the kind this selector picks")
	return cmd
}

func labelObject(cmd *cobra.Command, g *globalFlags, k *resource.Kind, name string, set map[string]string, remove []string, overwrite bool) error {
	obj, err := getObject(cmd, g, k, name)
	if err != nil {
		return err
	}
	ref := strings.ToLower(k.Name) + "/" + name
	labels := maps.Clone(obj.Metadata.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	for key, val := range set {
		if cur, ok := labels[key]; ok && cur != val && !overwrite {
			return fmt.Errorf("%s: label %q already has a value (%s), and --overwrite is false", ref, key, cur)
		}
		labels[key] = val
	}
	for _, key := range remove {
		delete(labels, key)
	}
	if maps.Equal(labels, obj.Metadata.Labels) || (len(labels) == 0 && len(obj.Metadata.Labels) == 0) {
		fmt.Fprintf(cmd.OutOrStdout(), "%s not labeled\n", ref)
		return nil
	}
	obj.Metadata.Labels = labels
	obj.Status = nil
	if err := call(cmd, g, http.MethodPut, objectPath(k, name), nil, obj, nil); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s labeled\n", ref)
	return nil
}
