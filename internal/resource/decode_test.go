package resource

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseManifestsErrorsNameField(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"bad mac", `kind: Machine
metadata: {name: web-1}
spec:
  interfaces:
    - mac: "zz:01"`, `machine "web-1": spec.interfaces[0].mac: "zz:01" is not a MAC address`},
		{"unknown spec field", `kind: Machine
metadata: {name: web-1}
spec:
  interfaces:
    - mac: "52:54:00:00:00:01"
      speed: 10`, `machine "web-1": spec.interfaces[0].speed: unknown field`},
		{"unknown top field", "kind: Machine\nmetadata: {name: a}\nspecs: {}", `machine "a": specs: unknown field`},
		{"unknown metadata field", "kind: Machine\nmetadata: {name: a, namespace: default}", `machine "a": metadata.namespace: unknown field`},
		{"annotation key", "kind: Machine\nmetadata: {name: a, annotations: {'bad key': x}}", `machine "a": metadata.annotations: "bad key" is not a valid annotation key`},
		{"annotation prefix", "kind: Machine\nmetadata: {name: a, annotations: {'Argo.Example/x': y}}", `metadata.annotations: "Argo.Example/x" is not a valid annotation key`},
		{"annotation name too long", "kind: Machine\nmetadata: {name: a, annotations: {" + strings.Repeat("n", 64) + ": y}}", `is not a valid annotation key`},
		{"annotation value type", "kind: Machine\nmetadata: {name: a, annotations: {replicas: 3}}", `metadata.annotations.replicas: expected a string, got a number (3) (quote it)`},
		{"annotations not a map", "kind: Machine\nmetadata: {name: a, annotations: [x]}", `metadata.annotations: expected a mapping, got a list`},
		{"annotations too big", "kind: Machine\nmetadata: {name: a, annotations: {big: " + strings.Repeat("x", MaxAnnotationsSize) + "}}", `metadata.annotations: 262147 bytes in total, more than the limit of 262144`},
		{"wrong type", "kind: Template\nmetadata: {name: t}\nspec:\n  actions:\n    - {name: a, type: exec, retries: many}", `template "t": spec.actions[0].retries: expected an integer, got a string ("many")`},
		{"bad kind", "kind: Server\nmetadata: {name: a}", `kind: "Server" is not one of`},
		{"kind case", "kind: machine\nmetadata: {name: a}", `kind: "machine": did you mean "Machine"?`},
		{"no name", "kind: Machine\nmetadata: {labels: {a: b}}", `machine "(unnamed)": metadata.name: required`},
		{"bad name", "kind: Machine\nmetadata: {name: Web_1}", `metadata.name: "Web_1" is not a valid name`},
		{"bad label", "kind: Machine\nmetadata: {name: a, labels: {rack: 'r 1'}}", `metadata.labels.rack: "r 1" is not a valid label value`},
		{"label key with @", "kind: Machine\nmetadata: {name: a, labels: {'@annotations': x}}", `metadata.labels: "@annotations" is not a valid label key`},
		{"numeric label", "kind: Machine\nmetadata: {name: a, labels: {rack: 1}}", `metadata.labels.rack: expected a string, got a number (1) (quote it)`},
		{"dup mac in machine", "kind: Machine\nmetadata: {name: a}\nspec: {interfaces: [{mac: '52:54:00:00:00:01'}, {mac: '52-54-00-00-00-01'}]}", `spec.interfaces[1].mac: 52:54:00:00:00:01 is also spec.interfaces[0].mac`},
		{"pool outside", "kind: Subnet\nmetadata: {name: s}\nspec: {cidr: 10.0.0.0/24, pools: [{start: 10.0.1.1, end: 10.0.1.9}]}", `subnet "s": spec.pools[0].start: 10.0.1.1 is outside 10.0.0.0/24`},
		{"pool overlap", "kind: Subnet\nmetadata: {name: s}\nspec: {cidr: 10.0.0.0/24, pools: [{start: 10.0.0.1, end: 10.0.0.9}, {start: 10.0.0.5, end: 10.0.0.20}]}", `spec.pools[1]: overlaps spec.pools[0]`},
		{"host bits", "kind: Subnet\nmetadata: {name: s}\nspec: {cidr: 10.0.0.1/24, mode: proxy}", `has host bits set (did you mean 10.0.0.0/24?)`},
		{"bad duration", "kind: Subnet\nmetadata: {name: s}\nspec: {cidr: 10.0.0.0/24, mode: proxy, leaseTime: forever}", `spec.leaseTime: "forever" is not a positive duration`},
		{"bad action type", "kind: Template\nmetadata: {name: t}\nspec: {actions: [{name: a, type: docker}]}", `spec.actions[0].type: "docker" is not one of`},
		{"uki number", "kind: Profile\nmetadata: {name: p}\nspec: {boot: {agent: true, uki: 3}}", `profile "p": spec.boot.uki: expected true, false or an artifact name, got a number (3)`},
		{"uki bad name", "kind: Profile\nmetadata: {name: p}\nspec: {boot: {agent: true, uki: 'My UKI'}}", `profile "p": spec.boot.uki: "My UKI" is not an artifact name`},
		{"truncated artifact signature", "kind: Artifact\nmetadata: {name: a}\nspec: {source: a.img, signature: 'untrusted comment: x'}", `artifact "a": spec.signature: minisign signature: 1 lines, want 4`},
		{"profile enrollment", "kind: Profile\nmetadata: {name: p}\nspec: {boot: {agent: true}, enrollment: manual}", `profile "p": spec.enrollment: "manual" is not one of auto-bound, approve, tpm`},
		{"machine enrollment", "kind: Machine\nmetadata: {name: a}\nspec: {enrollment: Approve}", `machine "a": spec.enrollment: "Approve" is not one of auto-bound, approve, tpm`},
		{"profile both", "kind: Profile\nmetadata: {name: p}\nspec: {boot: {agent: true, kernel: k}}", `spec.boot: set either agent or kernel, not both`},
		{"artifact sha", "kind: Artifact\nmetadata: {name: a}\nspec: {source: /x, sha256: abc}", `spec.sha256: "abc" is not 64 lower-case hex digits`},
		{"bmc driver", "kind: Machine\nmetadata: {name: a}\nspec: {bmc: {driver: ilo, address: x}}", `spec.bmc.driver: "ilo" is not one of ipmi, redfish, qemu`},
		{"bmc boot mode", "kind: Machine\nmetadata: {name: a}\nspec: {bmc: {driver: redfish, address: x, bootMode: bios}}", `spec.bmc.bootMode: "bios" is not uefi or legacy`},
		{"api version", "apiVersion: v2\nkind: Machine\nmetadata: {name: a}", `machine "a": apiVersion: "v2" is not supported: Kiln manifests are kiln.dev/v1`},
		{"kubernetes api version", "apiVersion: apps/v1\nkind: Machine\nmetadata: {name: a}", `apiVersion: "apps/v1" is not supported`},
		{"future api version", "apiVersion: kiln.dev/v2\nkind: Machine\nmetadata: {name: a}", `apiVersion: "kiln.dev/v2" is not supported`},
		{"api version type", "apiVersion: 1\nkind: Machine\nmetadata: {name: a}", `apiVersion: expected the string kiln.dev/v1, got a number (1)`},
		{"not a mapping", "- a\n- b", `expected an object with kind, metadata and spec, got a list`},
		{"yaml syntax", "kind: Machine\nmetadata: {name: a\n", `document 1:`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs, err := ParseManifests(strings.NewReader(c.doc), "test.yaml")
			if err == nil {
				t.Fatalf("no error; got %d objects", len(objs))
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, c.want)
			}
			if objs != nil {
				t.Fatalf("objects returned with an error")
			}
		})
	}
}

// TestProfileUKIDecodes: spec.boot.uki is true (the default artifact), false (none)
// or an artifact name.
func TestProfileUKIDecodes(t *testing.T) {
	for in, want := range map[string]BootUKI{"true": DefaultUKIArtifact, "false": "", "my-uki": "my-uki", "null": ""} {
		objs, err := ParseManifests(strings.NewReader("kind: Profile\nmetadata: {name: p}\nspec: {boot: {agent: true, uki: "+in+"}}"), "test")
		if err != nil {
			t.Fatalf("uki: %s: %v", in, err)
		}
		spec, err := Typed[ProfileSpec](objs[0])
		if err != nil || spec.Boot.UKI != want {
			t.Errorf("uki: %s: %q %v, want %q", in, spec.Boot.UKI, err, want)
		}
	}
}

func TestParseManifestsNormalizes(t *testing.T) {
	doc := `apiVersion: kiln.dev/v1
kind: Machine
metadata:
  name: web-1
  labels: {role: web}
  resourceVersion: "3"
spec:
  interfaces:
    - mac: 52-54-00-AB-CD-EF
---
---
kind: Subnet
metadata: {name: s}
spec: {cidr: 10.0.0.0/24, pools: [{start: 10.0.0.10, end: 10.0.0.20}]}
`
	objs, err := ParseManifests(strings.NewReader(doc), "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("got %d objects, want 2 (empty documents skipped)", len(objs))
	}
	m, err := Typed[MachineSpec](objs[0])
	if err != nil {
		t.Fatal(err)
	}
	if m.Interfaces[0].MAC != "52:54:00:ab:cd:ef" {
		t.Errorf("mac not normalized: %q", m.Interfaces[0].MAC)
	}
	if objs[0].Metadata.ResourceVersion != "3" || objs[0].Metadata.Labels["role"] != "web" {
		t.Errorf("metadata lost: %+v", objs[0].Metadata)
	}
	s, _ := Typed[SubnetSpec](objs[1])
	if s.Mode != ModeFull {
		t.Errorf("subnet mode default: got %q want full", s.Mode)
	}
	keys, _ := UniqueKeys(objs[0])
	if len(keys) != 1 || keys[0] != "mac:52:54:00:ab:cd:ef" {
		t.Errorf("unique keys: %v", keys)
	}
}

func TestExamplesParse(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	kinds := map[string]int{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := ParseManifests(fh, f)
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			kinds[o.Kind]++
		}
	}
	if kinds["Machine"] < 3 || kinds["Profile"] < 2 || kinds["Artifact"] < 1 {
		t.Errorf("examples should hold a small fleet: %v", kinds)
	}
}

func TestSelector(t *testing.T) {
	labels := map[string]string{"role": "web", "rack": "r1", "gpu": ""}
	cases := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"role=web", true},
		{"role==web", true},
		{"role=db", false},
		{"role!=db", true},
		{"role!=web", false},
		{"rack in (r1,r2)", true},
		{"rack in (r2, r3)", false},
		{"rack notin (r2)", true},
		{"gpu", true},
		{"!gpu", false},
		{"!decom", true},
		{"role=web,rack=r1", true},
		{"role=web,rack=r2", false},
		{"missing!=x", true},
	}
	for _, c := range cases {
		s, err := ParseSelector(c.sel)
		if err != nil {
			t.Fatalf("%q: %v", c.sel, err)
		}
		if got := s.Matches(labels); got != c.want {
			t.Errorf("%q matches %v = %v, want %v", c.sel, labels, got, c.want)
		}
	}
	for _, bad := range []string{"role=we b", "a,,b", "rack in r1", "=x", "a b c"} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseManifests(f *testing.F) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(string(b))
	}
	f.Add("kind: Machine\nmetadata: {name: a}\nspec: {interfaces: [{mac: 'zz'}]}")
	f.Add("kind: Subnet\nmetadata: {name: s}\nspec: {cidr: 10.0.0.0/8, pools: [{start: 10.0.0.1, end: 10.255.255.254}]}")
	f.Add("---\n---\n")
	f.Fuzz(func(t *testing.T, doc string) {
		objs, err := ParseManifests(strings.NewReader(doc), "fuzz")
		if err != nil {
			return
		}
		for _, o := range objs {
			// A valid object re-decodes to the same canonical object.
			again, err := DecodeJSON(mustJSON(o))
			if err != nil {
				t.Fatalf("re-decode of accepted object failed: %v\n%s", err, mustJSON(o))
			}
			if string(again.Spec) != string(o.Spec) {
				t.Fatalf("spec not canonical:\n%s\n%s", o.Spec, again.Spec)
			}
		}
	})
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"role=web", "rack in (r1,r2)", "!gpu", "a!=b,c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err == nil {
			sel.Matches(map[string]string{"role": "web"})
		}
	})
}

// Annotations that Argo CD, Flux and kubectl put on the manifests they apply must come
// back unchanged: values are free text (JSON, spaces, newlines), keys carry prefixes.
func TestAnnotationsRoundTrip(t *testing.T) {
	doc := `apiVersion: kiln.dev/v1
kind: Machine
metadata:
  name: web-1
  labels: {role: web}
  annotations:
    argocd.argoproj.io/tracking-id: "kiln:kiln.dev/Machine:default/web-1"
    argocd.argoproj.io/sync-wave: "2"
    kustomize.toolkit.fluxcd.io/name: fleet
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"kiln.dev/v1","kind":"Machine","metadata":{"name":"web-1"}}
    note: "free text: spaces, \"quotes\" and unicode é"
    empty: ""
spec: {}
`
	objs, err := ParseManifests(strings.NewReader(doc), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a := objs[0].Metadata.Annotations
	want := map[string]string{
		"argocd.argoproj.io/tracking-id":                   "kiln:kiln.dev/Machine:default/web-1",
		"argocd.argoproj.io/sync-wave":                     "2",
		"kustomize.toolkit.fluxcd.io/name":                 "fleet",
		"kubectl.kubernetes.io/last-applied-configuration": `{"apiVersion":"kiln.dev/v1","kind":"Machine","metadata":{"name":"web-1"}}` + "\n",
		"note":  `free text: spaces, "quotes" and unicode é`,
		"empty": "",
	}
	if !maps.Equal(a, want) {
		t.Fatalf("annotations %q\nwant %q", a, want)
	}
	if objs[0].Metadata.Labels["role"] != "web" || len(objs[0].Metadata.Labels) != 1 {
		t.Errorf("labels %v: annotations leaked into labels or labels lost", objs[0].Metadata.Labels)
	}
	// The JSON form (what the API sends) decodes to the same annotations.
	b, err := json.Marshal(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	again, err := DecodeJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(again.Metadata.Annotations, want) {
		t.Errorf("after JSON: %q", again.Metadata.Annotations)
	}
	// A clone does not share the map.
	c := again.Clone()
	c.Metadata.Annotations["note"] = "changed"
	if again.Metadata.Annotations["note"] == "changed" {
		t.Errorf("Clone shares the annotations map")
	}
}

func TestValidateAnnotationsLimit(t *testing.T) {
	// Exactly at the limit is accepted; one byte more is not.
	key := "k"
	ok := map[string]string{key: strings.Repeat("v", MaxAnnotationsSize-len(key))}
	if err := ValidateAnnotations(ok); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	ok[key] += "v"
	if err := ValidateAnnotations(ok); err == nil {
		t.Fatal("one byte over the limit accepted")
	}
	// The limit is on the total, not per value.
	split := map[string]string{"a": strings.Repeat("v", MaxAnnotationsSize/2), "b": strings.Repeat("v", MaxAnnotationsSize/2)}
	if err := ValidateAnnotations(split); err == nil {
		t.Fatal("two halves plus their keys accepted")
	}
}
