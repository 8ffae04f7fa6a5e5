package thirdparty

import (
	"os"
	"slices"
	"testing"
)

// Excerpts of the licences' own wording (the parts that state terms), wrapped as
// they are in real LICENSE files.
const (
	mitText = `Copyright (c) 2014 Someone

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.`
	bsd2Text = `Copyright (c) 2015, Someone
Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:
1. Redistributions of source code must retain the above copyright notice.
2. Redistributions in binary form must reproduce the above copyright notice.`
	bsd3Text = bsd2Text + `
3. Neither the name of the copyright holder nor the names of its contributors
may be used to endorse or promote products derived from this software without
specific prior written permission.`
	bsd4Text = bsd3Text + `
4. All advertising materials mentioning features or use of this software must
display the following acknowledgement.`
	iscText = `Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above
copyright notice and this permission notice appear in all copies.`
	mplText = `Mozilla Public License Version 2.0
==================================
1.12. "Secondary License"
    means either the GNU General Public License, Version 2.0, the GNU Lesser
    General Public License, Version 2.1, the GNU Affero General Public
    License, Version 3.0, or any later versions of those licenses.`
	gplText = `                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.`
	lgplText = `                   GNU LESSER GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007
  This version of the GNU Lesser General Public License incorporates
the terms and conditions of version 3 of the GNU General Public
License, supplemented by the additional permissions listed below.`
	agplText = `                    GNU AFFERO GENERAL PUBLIC LICENSE
                       Version 3, 19 November 2007`
)

func TestClassify(t *testing.T) {
	apache, err := os.ReadFile("../../LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"Kiln's own LICENSE", string(apache), []string{"Apache-2.0"}},
		{"Apache-2.0 header only", "Licensed under the Apache License, Version 2.0 (the \"License\");", []string{"Apache-2.0"}},
		{"MIT", mitText, []string{"MIT"}},
		{"BSD-2-Clause", bsd2Text, []string{"BSD-2-Clause"}},
		{"BSD-3-Clause", bsd3Text, []string{"BSD-3-Clause"}},
		{"BSD-4-Clause is not BSD-3", bsd4Text, nil},
		{"ISC", iscText, []string{"ISC"}},
		{"MPL-2.0 names the GNU licences without being one", mplText, []string{"MPL-2.0"}},
		{"dual MIT and Apache-2.0 (yaml.v3)", mitText + "\n\n" + string(apache), []string{"Apache-2.0", "MIT"}},
		{"GPL-3.0", gplText, []string{"GPL"}},
		{"LGPL-3.0 (builds on the GPL's text)", lgplText, []string{"GPL", "LGPL"}},
		{"AGPL-3.0", agplText, []string{"AGPL"}},
		{"MIT with a GPL file alongside in the same text", mitText + "\n" + gplText, []string{"GPL", "MIT"}},
		{"SQLite blessing", "All of the code and documentation in SQLite has been dedicated to the public\ndomain by the authors.", []string{"LicenseRef-Public-Domain"}},
		{"a README naming a licence", "This project uses the MIT license; see the website.", nil},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify([]byte(tt.text)); !slices.Equal(got, tt.want) {
				t.Errorf("Classify = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAllowedRefusesCopyleftAndUnknown(t *testing.T) {
	for _, id := range []string{"GPL", "LGPL", "AGPL", "BSD-4-Clause", "", "SSPL-1.0"} {
		if Allowed(id) {
			t.Errorf("Allowed(%q) = true", id)
		}
	}
	for _, id := range []string{"Apache-2.0", "MIT", "BSD-2-Clause", "BSD-3-Clause", "ISC", "MPL-2.0"} {
		if !Allowed(id) {
			t.Errorf("Allowed(%q) = false", id)
		}
	}
}
