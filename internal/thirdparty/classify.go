package thirdparty

import (
	"slices"
	"strings"
	"unicode"
)

// licenceMarker recognises one licence by phrases of its text. All phrases must be
// present (after normalize); they are the parts of the text that state its terms,
// not its title, so a README that merely names a licence does not match.
type licenceMarker struct {
	id      string
	phrases []string
	// unless: phrases whose presence means a different licence of the same family
	// (BSD-2-Clause has no endorsement clause; BSD-3-Clause does).
	unless []string
}

// licenceMarkers are the licences Classify knows. A file may match several
// (gopkg.in/yaml.v3's LICENSE holds both MIT and Apache-2.0 text, and the module is
// under both; the LGPL's text names the GPL, and both are refused).
func licenceMarkers() []licenceMarker {
	return []licenceMarker{
		{id: "Apache-2.0", phrases: []string{"apache license", "version 2 0", "grant of patent license"}},
		{id: "Apache-2.0", phrases: []string{"licensed under the apache license version 2 0"}},
		{id: "MIT", phrases: []string{"permission is hereby granted free of charge to any person obtaining a copy", "the above copyright notice and this permission notice shall be included"}},
		{id: "BSD-3-Clause", phrases: []string{"redistribution and use in source and binary forms", "endorse or promote products derived from this software"}, unless: []string{"all advertising materials mentioning"}},
		{id: "BSD-2-Clause", phrases: []string{"redistribution and use in source and binary forms", "redistributions in binary form must reproduce"}, unless: []string{"endorse or promote products derived", "all advertising materials mentioning"}},
		{id: "ISC", phrases: []string{"permission to use copy modify and", "distribute this software for any purpose with or without fee is hereby granted"}},
		{id: "MPL-2.0", phrases: []string{"mozilla public license version 2 0"}},
		{id: "Unlicense", phrases: []string{"this is free and unencumbered software released into the public domain"}},
		{id: "CC0-1.0", phrases: []string{"cc0 1 0 universal"}},
		// SQLite's blessing: its code is dedicated to the public domain.
		{id: "LicenseRef-Public-Domain", phrases: []string{"dedicated to the public domain"}},
		// The copyleft licences Kiln cannot link under Apache-2.0.
		{id: "GPL", phrases: []string{"gnu general public license"}},
		{id: "LGPL", phrases: []string{"gnu lesser general public license"}},
		{id: "LGPL", phrases: []string{"gnu library general public license"}},
		{id: "AGPL", phrases: []string{"gnu affero general public license"}},
	}
}

// mplSecondaryLicences is MPL-2.0's definition of "Secondary License", which names
// the GNU licences without putting the code under them; it is cut out before the
// GNU markers are checked so that MPL-2.0 text is not mistaken for GPL.
const mplSecondaryLicences = "secondary license means either the gnu general public license version 2 0 the gnu lesser general public license version 2 1 the gnu affero general public license version 3 0 or any later versions of those licenses"

// Allowed reports whether id is a licence under whose terms Kiln, itself Apache-2.0,
// can ship a binary: permissive ones (their notices go into THIRD_PARTY_NOTICES),
// public domain, and MPL-2.0 (file-level copyleft: unmodified MPL code in a larger
// work is fine).
func Allowed(id string) bool {
	return slices.Contains([]string{"Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "CC0-1.0", "ISC", "LicenseRef-Public-Domain", "MIT", "MPL-2.0", "Unlicense"}, id)
}

// Classify returns the SPDX identifiers (GPL, LGPL and AGPL without a version) of
// the licences whose text is in text, sorted; none when it recognises nothing.
func Classify(text []byte) []string {
	norm := normalize(string(text))
	if strings.Contains(norm, "mozilla public license") {
		norm = strings.ReplaceAll(norm, mplSecondaryLicences, " ")
	}
	var ids []string
	for _, m := range licenceMarkers() {
		if containsAll(norm, m.phrases) && !containsAny(norm, m.unless) {
			ids = append(ids, m.id)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// normalize lower-cases text and turns every run of punctuation and white space
// into one space, so that line breaks, quotes and "and/or" do not defeat a phrase.
func normalize(s string) string {
	var b strings.Builder
	space := true
	for _, r := range strings.ToLower(s) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r)
			space = false
		} else if !space {
			b.WriteByte(' ')
			space = true
		}
	}
	return strings.TrimSpace(b.String())
}

func containsAll(s string, phrases []string) bool {
	for _, p := range phrases {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func containsAny(s string, phrases []string) bool {
	return slices.ContainsFunc(phrases, func(p string) bool { return strings.Contains(s, p) })
}
