package release

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/thirdparty"
)

// The SBOM is SPDX 2.3 JSON rather than CycloneDX: SPDX is an ISO standard
// (ISO/IEC 5962:2021), its licence fields take the SPDX identifiers the thirdparty
// package already classifies modules into (the SBOM and THIRD_PARTY_NOTICES cannot
// disagree), and its relationships say plainly that a binary was GENERATED_FROM
// Kiln's source, which DEPENDS_ON each module. It lists the modules linked into the
// binaries (go list -deps of ./cmd/kiln for the release platforms, the list `go
// version -m` prints from a binary), not `go list -m all`, which also holds modules
// only tests use.

// SBOMBinary is one released binary as the SBOM names it.
type SBOMBinary struct {
	Name   string
	SHA256 string
}

type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	Name                  string            `json:"name"`
	SPDXID                string            `json:"SPDXID"`
	VersionInfo           string            `json:"versionInfo,omitempty"`
	PackageFileName       string            `json:"packageFileName,omitempty"`
	DownloadLocation      string            `json:"downloadLocation"`
	FilesAnalyzed         bool              `json:"filesAnalyzed"`
	Checksums             []spdxChecksum    `json:"checksums,omitempty"`
	LicenseConcluded      string            `json:"licenseConcluded"`
	LicenseDeclared       string            `json:"licenseDeclared"`
	CopyrightText         string            `json:"copyrightText"`
	PrimaryPackagePurpose string            `json:"primaryPackagePurpose,omitempty"`
	ExternalRefs          []spdxExternalRef `json:"externalRefs,omitempty"`
}

type spdxChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type spdxExternalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	SPDXElementID      string `json:"spdxElementId"`
	RelationshipType   string `json:"relationshipType"`
	RelatedSPDXElement string `json:"relatedSpdxElement"`
}

const (
	kilnModule  = "github.com/kilnhq/kiln"
	kilnSPDXID  = "SPDXRef-Package-kiln"
	noAssertion = "NOASSERTION"
)

// SBOM renders the SPDX document of a release: the binaries, Kiln's source, the Go
// standard library of goVersion and every linked module with its licence. Its
// creation time is the commit's, so the same commit gives the same document.
func SBOM(src Source, goVersion string, binaries []SBOMBinary, mods []thirdparty.Licensed) ([]byte, error) {
	doc := spdxDocument{
		SPDXVersion:       "SPDX-2.3",
		DataLicense:       "CC0-1.0",
		SPDXID:            "SPDXRef-DOCUMENT",
		Name:              "kiln-" + src.Version,
		DocumentNamespace: "https://github.com/kilnhq/kiln/releases/" + src.Version + "/spdx/" + src.Commit,
		CreationInfo: spdxCreationInfo{
			Created:  src.Time.UTC().Format(time.RFC3339),
			Creators: []string{"Organization: Kiln", "Tool: kiln-release-" + src.Version},
		},
	}
	doc.Packages = append(doc.Packages, spdxPackage{
		Name:                  kilnModule,
		SPDXID:                kilnSPDXID,
		VersionInfo:           src.Version,
		DownloadLocation:      "git+https://github.com/kilnhq/kiln@" + src.Commit,
		LicenseConcluded:      "Apache-2.0",
		LicenseDeclared:       "Apache-2.0",
		CopyrightText:         noAssertion,
		PrimaryPackagePurpose: "SOURCE",
		ExternalRefs:          []spdxExternalRef{purl(kilnModule, src.Version)},
	})
	for i, b := range binaries {
		id := fmt.Sprintf("SPDXRef-Binary-%d", i)
		doc.Packages = append(doc.Packages, spdxPackage{
			Name:                  b.Name,
			SPDXID:                id,
			VersionInfo:           src.Version,
			PackageFileName:       b.Name,
			DownloadLocation:      noAssertion,
			Checksums:             []spdxChecksum{{Algorithm: "SHA256", ChecksumValue: b.SHA256}},
			LicenseConcluded:      noAssertion,
			LicenseDeclared:       noAssertion,
			CopyrightText:         noAssertion,
			PrimaryPackagePurpose: "APPLICATION",
		})
		doc.Relationships = append(doc.Relationships,
			spdxRelationship{"SPDXRef-DOCUMENT", "DESCRIBES", id},
			spdxRelationship{id, "GENERATED_FROM", kilnSPDXID})
	}
	doc.Packages = append(doc.Packages, spdxPackage{
		Name:             "stdlib",
		SPDXID:           "SPDXRef-Package-stdlib",
		VersionInfo:      goVersion,
		DownloadLocation: "https://go.dev/dl/",
		LicenseConcluded: "BSD-3-Clause",
		LicenseDeclared:  noAssertion,
		CopyrightText:    noAssertion,
		ExternalRefs:     []spdxExternalRef{purl("stdlib", goVersion)},
	})
	doc.Relationships = append(doc.Relationships, spdxRelationship{kilnSPDXID, "DEPENDS_ON", "SPDXRef-Package-stdlib"})
	for i, m := range mods {
		id := fmt.Sprintf("SPDXRef-Module-%d", i)
		doc.Packages = append(doc.Packages, spdxPackage{
			Name:             m.Path,
			SPDXID:           id,
			VersionInfo:      m.Version,
			DownloadLocation: "https://proxy.golang.org/" + escapeModulePath(m.Path) + "/@v/" + escapeModulePath(m.Version) + ".zip",
			LicenseConcluded: m.Licence(),
			LicenseDeclared:  noAssertion,
			CopyrightText:    noAssertion,
			ExternalRefs:     []spdxExternalRef{purl(m.Path, m.Version)},
		})
		doc.Relationships = append(doc.Relationships, spdxRelationship{kilnSPDXID, "DEPENDS_ON", id})
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode SBOM of %s: %w", src.Version, err)
	}
	return append(out, '\n'), nil
}

// purl is the package URL of a Go module (pkg:golang/<path>@<version>).
func purl(path, version string) spdxExternalRef {
	return spdxExternalRef{
		ReferenceCategory: "PACKAGE-MANAGER",
		ReferenceType:     "purl",
		ReferenceLocator:  "pkg:golang/" + path + "@" + version,
	}
}

// escapeModulePath applies the module proxy's case encoding (an upper-case letter
// becomes '!' and its lower case), so that proxy URLs work on case-insensitive file
// systems; golang.org/x/mod/module.EscapePath does the same, but is not a dependency.
func escapeModulePath(s string) string {
	var b strings.Builder
	for _, r := range s {
		if 'A' <= r && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
