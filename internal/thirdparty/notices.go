package thirdparty

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// NoticesFile is the notices file at the repository root, committed.
const NoticesFile = "THIRD_PARTY_NOTICES"

// fileKind says which of a module's root files Inspect reads: licences (LICENSE,
// COPYING and variants such as LICENSE.txt or LICENSE-SQLITE) are classified; NOTICE
// files, which Apache-2.0 section 4(d) requires a redistributor to pass on, and Go's
// PATENTS grants are copied as they are.
func fileKind(name string) (licence, notice bool) {
	lower := strings.ToLower(name)
	has := func(prefix string) bool {
		rest, ok := strings.CutPrefix(lower, prefix)
		return ok && (rest == "" || strings.ContainsAny(rest[:1], "-._"))
	}
	return has("license") || has("licence") || has("copying"), has("notice") || has("patents")
}

// File is one licence or notice file of a module.
type File struct {
	Name string
	Text []byte
	// IDs are the licences Classify found; nil for a notice file.
	IDs []string
}

// Licensed is a module with its licence and notice files.
type Licensed struct {
	Module
	Files []File
}

// Licence is the module's licence as an SPDX expression: every licence found, since
// a module whose files name two licences (yaml.v3: MIT and Apache-2.0) is under both.
func (l Licensed) Licence() string {
	var ids []string
	for _, f := range l.Files {
		ids = append(ids, f.IDs...)
	}
	slices.Sort(ids)
	return strings.Join(slices.Compact(ids), " AND ")
}

// reviewedFile is a licence-like file that Classify cannot (or must not) judge and a
// person has read. It is pinned by content: a changed file is judged again.
type reviewedFile struct {
	module, name, sha256 string
	ids                  []string
	why                  string
}

func reviewedFiles() []reviewedFile {
	return []reviewedFile{
		{
			module: "modernc.org/memory", name: "LICENSE-LOGO",
			sha256: "5ae5bee3072a841376451b48d8cfcec7188e10543926d5870828d36c8a750dc5",
			why:    "the address of the project logo's source on Wikimedia Commons; the logo is not in kiln",
		},
	}
}

// Inspect reads m's licence and notice files and checks that every licence found is
// Allowed. A module without a licence file, a licence file that names no licence Kiln
// knows, and a licence Kiln cannot ship under are errors.
func Inspect(m Module) (Licensed, error) {
	entries, err := os.ReadDir(m.Dir)
	if err != nil {
		return Licensed{}, fmt.Errorf("read licence files of module %s: %w", m.Path, err)
	}
	l := Licensed{Module: m}
	var problems []error
	licences := 0
	for _, e := range entries {
		name := e.Name()
		isLicence, isNotice := fileKind(name)
		if e.IsDir() || !isLicence && !isNotice {
			continue
		}
		text, err := os.ReadFile(filepath.Join(m.Dir, name))
		if err != nil {
			return Licensed{}, fmt.Errorf("read licence file %s of module %s: %w", name, m.Path, err)
		}
		f := File{Name: name, Text: text}
		if isLicence {
			licences++
			f.IDs = Classify(text)
			if r, ok := reviewed(m.Path, name, text); ok {
				f.IDs = r.ids
			} else if len(f.IDs) == 0 {
				problems = append(problems, fmt.Errorf("module %s %s: %s: licence not recognised", m.Path, m.Version, name))
			}
			for _, id := range f.IDs {
				if !Allowed(id) {
					problems = append(problems, fmt.Errorf("module %s %s: %s: %s is not compatible with shipping kiln under Apache-2.0", m.Path, m.Version, name, id))
				}
			}
		}
		l.Files = append(l.Files, f)
	}
	if licences == 0 {
		problems = append(problems, fmt.Errorf("module %s %s: no licence file (LICENSE, COPYING) in its root", m.Path, m.Version))
	}
	return l, errors.Join(problems...)
}

func reviewed(module, name string, text []byte) (reviewedFile, bool) {
	sum := sha256.Sum256(text)
	for _, r := range reviewedFiles() {
		if r.module == module && r.name == name && r.sha256 == hex.EncodeToString(sum[:]) {
			return r, true
		}
	}
	return reviewedFile{}, false
}

// InspectAll inspects every module and reports every problem at once, so that one
// run shows everything a dependency change brought in.
func InspectAll(mods []Module) ([]Licensed, error) {
	var all []Licensed
	var problems []error
	for _, m := range mods {
		l, err := Inspect(m)
		if err != nil {
			problems = append(problems, err)
		}
		all = append(all, l)
	}
	return all, errors.Join(problems...)
}

// Notices renders THIRD_PARTY_NOTICES: a table of the modules and their licences,
// then each module's licence and notice files in full. A text identical to one
// already printed (the Apache-2.0 licence, which carries no copyright line) is
// referred to instead of repeated. goLicence is the Go distribution's LICENSE, which
// covers the runtime and standard library in the binary. The output depends only on
// module contents, never on where the module cache is.
func Notices(goLicence []byte, mods []Licensed) []byte {
	const rule = "================================================================================\n"
	var b bytes.Buffer
	b.WriteString("THIRD-PARTY NOTICES FOR KILN\n\n")
	b.WriteString("Generated by `make licenses` (go run ./tools/licenses) from the modules linked\n")
	b.WriteString("into kiln (./cmd/kiln, CGO_ENABLED=0, the release platforms); do not edit.\n\n")
	b.WriteString("Kiln itself is licensed under the Apache License, Version 2.0 (LICENSE). The kiln\n")
	b.WriteString("binary also contains the following software, under the licences shown.\n\n")
	fmt.Fprintf(&b, "  %-60s %s\n", "Go standard library and runtime", "BSD-3-Clause")
	for _, m := range mods {
		fmt.Fprintf(&b, "  %-60s %s\n", m.Path+" "+m.Version, m.Licence())
	}
	printed := map[[32]byte]string{}
	section := func(title string, files []File) {
		b.WriteString("\n" + rule + title + "\n" + rule)
		for _, f := range files {
			sum := sha256.Sum256(f.Text)
			if first, ok := printed[sum]; ok {
				fmt.Fprintf(&b, "\n--- %s: identical to %s, above.\n", f.Name, first)
				continue
			}
			printed[sum] = f.Name + " of " + title
			fmt.Fprintf(&b, "\n--- %s:\n\n%s", f.Name, strings.TrimLeft(string(f.Text), "\n"))
			if !bytes.HasSuffix(f.Text, []byte("\n")) {
				b.WriteByte('\n')
			}
		}
	}
	section("Go standard library and runtime", []File{{Name: "LICENSE", Text: goLicence}})
	for _, m := range mods {
		section(m.Path+" "+m.Version, m.Files)
	}
	return b.Bytes()
}

// Render lists the modules linked into kiln for the platforms, inspects their
// licences and renders the notices; any licence problem is an error.
func Render(ctx context.Context, repoDir string, platforms []Platform) ([]byte, error) {
	mods, err := LinkedModules(ctx, repoDir, platforms)
	if err != nil {
		return nil, err
	}
	licensed, err := InspectAll(mods)
	if err != nil {
		return nil, err
	}
	goroot, err := GoRoot(ctx)
	if err != nil {
		return nil, err
	}
	goLicence, err := os.ReadFile(filepath.Join(goroot, "LICENSE"))
	if err != nil {
		return nil, fmt.Errorf("read the Go distribution's licence: %w", err)
	}
	return Notices(goLicence, licensed), nil
}
