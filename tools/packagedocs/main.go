// Command packagedocs writes what the Debian package ships beside the binary,
// from the command tree itself so that it says what --help says: a roff man page
// (section 1) for kiln and each subcommand, and /etc/kiln/kiln.yaml with every
// `kiln serve` setting commented out at its default. cobra/doc would make the
// pages too but needs go-md2man, a module Kiln does not otherwise link; the roff
// needed here is a few macros.
//
//	go run ./tools/packagedocs -man DIR -config FILE -version v1.2.3
package main

import (
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kilnhq/kiln/internal/cli"
)

func main() {
	manDir := flag.String("man", "", "directory to write the man pages to")
	configFile := flag.String("config", "", "file to write the commented default kiln.yaml to")
	version := flag.String("version", cli.Version, "version named in the pages' footer")
	flag.Parse()
	if err := run(*manDir, *configFile, *version); err != nil {
		fmt.Fprintln(os.Stderr, "packagedocs:", err)
		os.Exit(1)
	}
}

func run(manDir, configFile, version string) error {
	root := cli.NewRoot(os.Stdout, os.Stderr)
	root.InitDefaultCompletionCmd()
	root.InitDefaultHelpCmd()
	if manDir != "" {
		if err := os.MkdirAll(manDir, 0o755); err != nil {
			return fmt.Errorf("man page directory: %w", err)
		}
		if err := writeTree(root, manDir, version); err != nil {
			return err
		}
	}
	if configFile != "" {
		serve, _, err := root.Find([]string{"serve"})
		if err != nil {
			return fmt.Errorf("find the serve command: %w", err)
		}
		if err := os.WriteFile(configFile, defaultConfig(serve), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", configFile, err)
		}
	}
	return nil
}

// defaultConfig is a kiln.yaml that changes nothing: every setting of serve
// (and the global data-dir) commented out at its default, with its help text.
func defaultConfig(serve *cobra.Command) []byte {
	var b bytes.Buffer
	b.WriteString(`# /etc/kiln/kiln.yaml: settings of ` + "`kiln serve`" + `, read when it starts without
# --config. Keys are the flags' names (kiln serve --help); a flag or a KILN_<FLAG>
# variable wins over this file. Every line below is commented out at its default.
# Lists are YAML lists (dhcp-interface: [eth1, eth2]).
`)
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.AddFlagSet(serve.LocalFlags())
	fs.AddFlagSet(serve.InheritedFlags()) // data-dir is the root's
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" || f.Name == "config" || f.Name == "help" {
			return
		}
		switch f.Name {
		case "server", "token", "ca-fingerprint", "known-servers", "request-timeout":
			return // client settings, which serve does not use
		}
		fmt.Fprintf(&b, "\n# %s\n", strings.ReplaceAll(f.Usage, "\n", "\n# "))
		def := f.DefValue
		switch {
		case f.Value.Type() == "stringArray":
			def = "[]"
		case def == "":
			def = `""`
		}
		fmt.Fprintf(&b, "#%s: %s\n", f.Name, def)
	})
	return b.Bytes()
}

// writeTree writes cmd's page and those of its visible subcommands.
func writeTree(cmd *cobra.Command, dir, version string) error {
	if cmd.Hidden || cmd.Deprecated != "" {
		return nil
	}
	name := strings.ReplaceAll(cmd.CommandPath(), " ", "-")
	path := filepath.Join(dir, name+".1")
	if err := os.WriteFile(path, page(cmd, version), 0o644); err != nil {
		return fmt.Errorf("write man page %s: %w", path, err)
	}
	for _, c := range cmd.Commands() {
		if err := writeTree(c, dir, version); err != nil {
			return err
		}
	}
	return nil
}

// page is one command's man page. It carries no date, so that a rebuild from the
// same commit is byte-identical.
func page(cmd *cobra.Command, version string) []byte {
	var b bytes.Buffer
	name := strings.ReplaceAll(cmd.CommandPath(), " ", "-")
	fmt.Fprintf(&b, ".TH %q 1 \"\" %q \"Kiln Manual\"\n", strings.ToUpper(name), "kiln "+version)
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", name, roff(cmd.Short))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.B %s\n", roff(cmd.UseLine()))
	desc := cmp.Or(cmd.Long, cmd.Short)
	fmt.Fprintf(&b, ".SH DESCRIPTION\n%s\n", paragraphs(desc))
	writeFlags(&b, "OPTIONS", cmd.NonInheritedFlags())
	writeFlags(&b, "OPTIONS INHERITED FROM PARENT COMMANDS", cmd.InheritedFlags())
	if cmd.Example != "" {
		fmt.Fprintf(&b, ".SH EXAMPLES\n.nf\n%s\n.fi\n", roff(cmd.Example))
	}
	var see []string
	if cmd.HasParent() {
		see = append(see, strings.ReplaceAll(cmd.Parent().CommandPath(), " ", "-")+"(1)")
	}
	for _, c := range cmd.Commands() {
		if !c.Hidden && c.Deprecated == "" {
			see = append(see, strings.ReplaceAll(c.CommandPath(), " ", "-")+"(1)")
		}
	}
	if len(see) > 0 {
		slices.Sort(see)
		fmt.Fprintf(&b, ".SH SEE ALSO\n%s\n", roff(strings.Join(see, ", ")))
	}
	return b.Bytes()
}

func writeFlags(b *bytes.Buffer, title string, fs *pflag.FlagSet) {
	if !fs.HasAvailableFlags() {
		return
	}
	fmt.Fprintf(b, ".SH %s\n", title)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" {
			return
		}
		fmt.Fprint(b, ".TP\n")
		if f.Shorthand != "" {
			fmt.Fprintf(b, "\\fB\\-%s\\fR, ", f.Shorthand)
		}
		fmt.Fprintf(b, "\\fB\\-\\-%s\\fR", roff(f.Name))
		if f.Value.Type() != "bool" {
			fmt.Fprintf(b, "=\\fI%s\\fR", roff(cmp.Or(f.DefValue, `""`)))
		}
		fmt.Fprintf(b, "\n%s\n", roff(f.Usage))
	})
}

// paragraphs turns blank-line separated text into .PP paragraphs.
func paragraphs(s string) string {
	var out []string
	for _, p := range strings.Split(strings.TrimSpace(s), "\n\n") {
		out = append(out, roff(p))
	}
	return strings.Join(out, "\n.PP\n")
}

// roff escapes text: a backslash starts an escape, a line starting with '.' or
// an apostrophe is a request, and '-' is a hyphen unless written \-.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}
