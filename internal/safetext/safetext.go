// Package safetext makes text that came from machines or anonymous hosts safe to
// store and to print on an operator's terminal: control characters (C0, DEL, C1,
// which start ANSI escape sequences or new lines) and bidirectional overrides are
// shown escaped, as \n, \x1b or \u202e, so that such text can neither fake a line of
// output nor drive the terminal. Kiln applies it where the text enters (boot and
// enrollment fields) and again where it is printed (the CLI), so rows stored before
// validation existed are as harmless as new ones.
package safetext

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Escape returns s with every control character, every bidirectional formatting
// character and every byte that is not UTF-8 written as a visible escape; other
// text is unchanged (a backslash too: "\x1b" typed as four characters stays four
// characters, which no terminal interprets).
func Escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Field is Escape(s) cut to at most max bytes (on a character boundary, an escape
// never split), with "..." marking the cut: for fields a remote host chooses.
func Field(s string, max int) string {
	if len(s) > 4*max {
		// Escaping never shortens; do not escape a megabyte to keep a hundred bytes.
		s = s[:4*max]
	}
	e := Escape(s)
	if len(e) <= max {
		return e
	}
	cut := max - len("...")
	for cut > 0 && !utf8.RuneStart(e[cut]) {
		cut--
	}
	// Do not leave half an escape such as `\x1` at the end.
	if j := strings.LastIndexByte(e[:cut], '\\'); j >= 0 && cut-j < len(`\u0000`) {
		cut = j
	}
	return e[:cut] + "..."
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			// Non-ASCII is checked rune by rune by Escape; most text is ASCII.
			if c >= 0x80 {
				return hasUnsafeRune(s[i:])
			}
			return true
		}
	}
	return false
}

func hasUnsafeRune(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r < 0x20 || r == 0x7f || unsafeRune(r) {
			return true
		}
		i += size
	}
	return false
}

// unsafeRune reports the non-ASCII runes a terminal acts on instead of showing: C1
// controls (U+009B is a one-character CSI on many terminals) and the bidirectional
// embeddings, overrides and isolates that reorder what follows them
// ("Trojan Source", CVE-2021-42574), plus line and paragraph separators.
func unsafeRune(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	case r == 0x2028, r == 0x2029:
		return true
	}
	return false
}
