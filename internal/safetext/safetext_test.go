package safetext_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kilnhq/kiln/internal/safetext"
)

func TestEscape(t *testing.T) {
	cases := []struct{ in, want string }{
		{"x86_64", "x86_64"},
		{"héllo wörld ✓", "héllo wörld ✓"},
		{"a\nb\rc\td", `a\nb\rc\td`},
		{"\x1b[2Jclear", `\x1b[2Jclear`},
		{"del\x7f nul\x00", `del\x7f nul\x00`},
		{"csi\u009b31m", `csi\u009b31m`},
		{"evil\u202egnp.exe", `evil\u202egnp.exe`},
		{"bad\xffutf8", `bad\xffutf8`},
		{`literal \x1b stays`, `literal \x1b stays`},
	}
	for _, c := range cases {
		if got := safetext.Escape(c.in); got != c.want {
			t.Errorf("Escape(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestField(t *testing.T) {
	cases := []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{strings.Repeat("a", 20), 10, "aaaaaaa..."},
		{"abcdef\x1b[2J", 12, `abcdef...`}, // the escape \x1b would be split
		{"ab\x1b[2J", 12, `ab\x1b[2J`},     // fits
		{"ééééééé", 8, "éé..."},            // never half a character
	}
	for _, c := range cases {
		got := safetext.Field(c.in, c.max)
		if got != c.want {
			t.Errorf("Field(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
		if len(got) > c.max || !utf8.ValidString(got) {
			t.Errorf("Field(%q, %d) = %q: longer than max or not UTF-8", c.in, c.max, got)
		}
	}
	if got := safetext.Field(strings.Repeat("\n", 1<<20), 100); len(got) > 100 {
		t.Errorf("Field of a megabyte of newlines: %d bytes", len(got))
	}
}
