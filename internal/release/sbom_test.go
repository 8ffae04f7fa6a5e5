package release

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/thirdparty"
)

func TestSBOMDocument(t *testing.T) {
	src := Source{Version: "v1.2.3", Commit: "0123456789abcdef0123456789abcdef01234567", Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	bins := []SBOMBinary{{Name: "kiln-v1.2.3-linux-amd64", SHA256: "aa"}, {Name: "kiln-v1.2.3-linux-arm64", SHA256: "bb"}}
	mods := []thirdparty.Licensed{
		{Module: thirdparty.Module{Path: "github.com/BurntSushi/toml", Version: "v1.0.0"}, Files: []thirdparty.File{{Name: "COPYING", IDs: []string{"MIT"}}}},
		{Module: thirdparty.Module{Path: "gopkg.in/yaml.v3", Version: "v3.0.1"}, Files: []thirdparty.File{{Name: "LICENSE", IDs: []string{"Apache-2.0", "MIT"}}}},
	}
	out, err := SBOM(src, "go1.26.8", bins, mods)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := SBOM(src, "go1.26.8", bins, mods)
	if !bytes.Equal(out, again) {
		t.Error("the same release gave two different SBOMs")
	}
	var doc spdxDocument
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.SPDXVersion != "SPDX-2.3" || doc.DataLicense != "CC0-1.0" || doc.CreationInfo.Created != "2026-12-01T10:00:00Z" {
		t.Errorf("document header %+v", doc)
	}
	byName := map[string]spdxPackage{}
	ids := map[string]bool{}
	for _, p := range doc.Packages {
		byName[p.Name] = p
		ids[p.SPDXID] = true
	}
	if p := byName["github.com/BurntSushi/toml"]; p.LicenseConcluded != "MIT" || p.DownloadLocation != "https://proxy.golang.org/github.com/!burnt!sushi/toml/@v/v1.0.0.zip" ||
		len(p.ExternalRefs) != 1 || p.ExternalRefs[0].ReferenceLocator != "pkg:golang/github.com/BurntSushi/toml@v1.0.0" {
		t.Errorf("module package %+v", p)
	}
	if p := byName["gopkg.in/yaml.v3"]; p.LicenseConcluded != "Apache-2.0 AND MIT" {
		t.Errorf("dual-licensed module: licenseConcluded %q", p.LicenseConcluded)
	}
	if p := byName["kiln-v1.2.3-linux-arm64"]; len(p.Checksums) != 1 || p.Checksums[0] != (spdxChecksum{"SHA256", "bb"}) {
		t.Errorf("binary package %+v", p)
	}
	if p := byName["stdlib"]; p.VersionInfo != "go1.26.8" {
		t.Errorf("stdlib package %+v", p)
	}
	describes := 0
	for _, r := range doc.Relationships {
		if !ids[r.RelatedSPDXElement] || (r.SPDXElementID != "SPDXRef-DOCUMENT" && !ids[r.SPDXElementID]) {
			t.Errorf("relationship %+v names an element the document lacks", r)
		}
		if r.RelationshipType == "DESCRIBES" {
			describes++
		}
	}
	if describes != len(bins) || len(ids) != len(doc.Packages) {
		t.Errorf("%d DESCRIBES for %d binaries; %d distinct SPDXIDs for %d packages", describes, len(bins), len(ids), len(doc.Packages))
	}
}
