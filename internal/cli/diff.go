package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/resource"
)

func newDiffCmd(g *globalFlags) *cobra.Command {
	var files []string
	var recursive bool
	cmd := &cobra.Command{
		Use:   "diff -f FILE|DIR|-",
		Short: "Show what apply would change: a unified diff of the live objects against the manifests",
		Long: `Compare each object of the manifests with the live one (labels and spec; status
is Kiln's) and print a unified diff, as kubectl diff does, with diff -u (or
$KILN_EXTERNAL_DIFF). Exit status: 0 no differences, 1 differences, >1 an error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(files) == 0 {
				return errors.New("-f: give at least one file, directory or - for standard input")
			}
			objs, err := readManifests(files, recursive, cmd.InOrStdin())
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "kiln-diff-")
			if err != nil {
				return fmt.Errorf("diff: %w", err)
			}
			defer os.RemoveAll(dir)
			live, merged := filepath.Join(dir, "LIVE"), filepath.Join(dir, "MERGED")
			for _, d := range []string{live, merged} {
				if err := os.Mkdir(d, 0o700); err != nil {
					return fmt.Errorf("diff: %w", err)
				}
			}
			for _, o := range objs {
				k, ok := resource.LookupKind(o.Kind)
				if !ok {
					return fmt.Errorf("%s %q: unknown kind", o.Kind, o.Metadata.Name)
				}
				file := strings.ToLower(o.Kind) + "-" + o.Metadata.Name + ".yaml"
				var cur resource.Object
				err := call(cmd, g, http.MethodGet, objectPath(k, o.Metadata.Name), nil, nil, &cur)
				if ae, ok := errors.AsType[*APIError](err); ok && ae.Code == http.StatusNotFound {
					err = nil // new: diffed against nothing
				} else if err == nil {
					if err := writeComparable(filepath.Join(live, file), &cur); err != nil {
						return err
					}
				}
				if err != nil {
					return err
				}
				if err := writeComparable(filepath.Join(merged, file), o); err != nil {
					return err
				}
			}
			tool := os.Getenv("KILN_EXTERNAL_DIFF")
			if tool == "" {
				tool = "diff -u -N -r"
			}
			d := exec.CommandContext(cmdContext(cmd), "sh", "-c", tool+` "$1" "$2"`, "kiln-diff", live, merged)
			d.Dir = dir
			d.Stdout, d.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			err = d.Run()
			if ee, ok := errors.AsType[*exec.ExitError](err); ok && ee.ExitCode() == 1 {
				return errDifferences
			}
			if err != nil {
				return fmt.Errorf("diff: %s: %w", tool, err)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory (*.yaml, *.yml, *.json) or - for standard input; repeatable")
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "read directories recursively")
	return cmd
}

// errDifferences is kiln diff's "there are differences": exit status 1 with no
// message, as diff and kubectl diff.
var errDifferences = errors.New("differences found")

// writeComparable writes the part of o an apply sets (kind, name, labels, annotations, spec), in
// the order and form `kiln get -o yaml` prints, so that only real changes differ.
func writeComparable(path string, o *resource.Object) error {
	c := &resource.Object{APIVersion: o.APIVersion, Kind: o.Kind, Spec: o.Spec}
	c.Metadata.Name, c.Metadata.Labels, c.Metadata.Annotations = o.Metadata.Name, o.Metadata.Labels, o.Metadata.Annotations
	if c.APIVersion == "" {
		c.APIVersion = "kiln.dev/v1"
	}
	// Spec through a generic map, so that key order and number forms do not differ.
	if len(c.Spec) > 0 {
		var v any
		if err := json.Unmarshal(c.Spec, &v); err != nil {
			return fmt.Errorf("diff %s/%s: %w", o.Kind, o.Metadata.Name, err)
		}
		c.Spec, _ = json.Marshal(v)
	}
	b, err := objectYAML(c)
	if err != nil {
		return fmt.Errorf("diff %s/%s: %w", o.Kind, o.Metadata.Name, err)
	}
	return os.WriteFile(path, b, 0o600)
}
