package thirdparty_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/release"
	"github.com/kilnhq/kiln/internal/thirdparty"
)

// fakeModule writes files into a fresh directory standing for a module in the cache.
func fakeModule(t *testing.T, path string, files map[string]string) thirdparty.Module {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return thirdparty.Module{Path: path, Version: "v1.0.0", Dir: dir}
}

const mit = "Permission is hereby granted, free of charge, to any person obtaining a copy\n" +
	"of this software... The above copyright notice and this permission notice shall be included\n"

func TestInspect(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string // "" means accepted
		licence string
	}{
		{"MIT with a NOTICE", map[string]string{"LICENSE": mit, "NOTICE": "Copyright Someone", "README.md": "GNU General Public License"}, "", "MIT"},
		{"licence in LICENSE.md and COPYING", map[string]string{"LICENSE.md": mit, "COPYING": mit}, "", "MIT"},
		{"GPL", map[string]string{"COPYING": "GNU GENERAL PUBLIC LICENSE Version 3"}, "GPL is not compatible", ""},
		{"GPL in a second licence file", map[string]string{"LICENSE": mit, "LICENSE-GPL": "GNU AFFERO GENERAL PUBLIC LICENSE"}, "AGPL is not compatible", ""},
		{"unknown licence", map[string]string{"LICENSE": "All rights reserved."}, "licence not recognised", ""},
		{"no licence file", map[string]string{"README.md": mit, "NOTICE": "x"}, "no licence file", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := thirdparty.Inspect(fakeModule(t, "example.com/m", tt.files))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Inspect: %v", err)
				}
				if l.Licence() != tt.licence {
					t.Errorf("Licence() = %q, want %q", l.Licence(), tt.licence)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "example.com/m v1.0.0") {
				t.Fatalf("Inspect error = %v, want one naming the module and %q", err, tt.wantErr)
			}
		})
	}
}

// TestInspectReviewedFileIsPinned: the one licence-like file a person reviewed
// (modernc.org/memory's LICENSE-LOGO) passes only with the content reviewed.
func TestInspectReviewedFileIsPinned(t *testing.T) {
	logo := "https://commons.wikimedia.org/wiki/File:Memory_infra_logo.png\n"
	if _, err := thirdparty.Inspect(fakeModule(t, "modernc.org/memory", map[string]string{"LICENSE": mit, "LICENSE-LOGO": logo})); err != nil {
		t.Errorf("the reviewed LICENSE-LOGO refused: %v", err)
	}
	changed := fakeModule(t, "modernc.org/memory", map[string]string{"LICENSE": mit, "LICENSE-LOGO": logo + "and now some terms\n"})
	if _, err := thirdparty.Inspect(changed); err == nil {
		t.Error("a changed LICENSE-LOGO was accepted without review")
	}
	other := fakeModule(t, "example.com/other", map[string]string{"LICENSE": mit, "LICENSE-LOGO": logo})
	if _, err := thirdparty.Inspect(other); err == nil {
		t.Error("the review of modernc.org/memory's file was applied to another module")
	}
}

func TestInspectAllReportsEveryProblem(t *testing.T) {
	mods := []thirdparty.Module{
		fakeModule(t, "example.com/gpl", map[string]string{"LICENSE": "GNU GENERAL PUBLIC LICENSE"}),
		fakeModule(t, "example.com/ok", map[string]string{"LICENSE": mit}),
		fakeModule(t, "example.com/none", nil),
	}
	_, err := thirdparty.InspectAll(mods)
	if err == nil || !strings.Contains(err.Error(), "example.com/gpl") || !strings.Contains(err.Error(), "example.com/none") || strings.Contains(err.Error(), "example.com/ok") {
		t.Fatalf("InspectAll error = %v, want both bad modules and not the good one", err)
	}
}

func TestNoticesRepeatsNoIdenticalText(t *testing.T) {
	apache, err := os.ReadFile("../../LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	var mods []thirdparty.Licensed
	for _, p := range []string{"example.com/a", "example.com/b"} {
		l, err := thirdparty.Inspect(fakeModule(t, p, map[string]string{"LICENSE": string(apache), "NOTICE": "Notice of " + p}))
		if err != nil {
			t.Fatal(err)
		}
		mods = append(mods, l)
	}
	out := thirdparty.Notices([]byte("Go licence\n"), mods)
	if n := bytes.Count(out, []byte("TERMS AND CONDITIONS FOR USE")); n != 1 {
		t.Errorf("the Apache-2.0 text is in the notices %d times, want 1", n)
	}
	for _, want := range []string{"Notice of example.com/a", "Notice of example.com/b", "identical to LICENSE of example.com/a v1.0.0", "Go licence", "example.com/b v1.0.0"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("notices lack %q", want)
		}
	}
}

// TestNoticesFileIsCurrent is the licence check of `make test`: every module linked
// into kiln has a licence Kiln can ship, and the committed THIRD_PARTY_NOTICES is
// what `make licenses` writes now (a dependency change without it fails here).
func TestNoticesFileIsCurrent(t *testing.T) {
	ctx := context.Background()
	want, err := thirdparty.Render(ctx, "../..", release.Platforms())
	if err != nil {
		t.Fatalf("licence check: %v", err)
	}
	have, err := os.ReadFile(filepath.Join("../..", thirdparty.NoticesFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want) {
		t.Fatalf("%s is stale: run make licenses and commit it", thirdparty.NoticesFile)
	}
	mods, err := thirdparty.LinkedModules(ctx, "../..", release.Platforms())
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) < 10 {
		t.Fatalf("only %d linked modules listed: %v", len(mods), mods)
	}
	for _, m := range mods {
		if !bytes.Contains(have, []byte("\n"+m.Path+" "+m.Version+"\n")) {
			t.Errorf("%s lacks a section for %s %s", thirdparty.NoticesFile, m.Path, m.Version)
		}
	}
}
