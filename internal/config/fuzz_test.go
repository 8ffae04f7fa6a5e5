package config

import (
	"testing"
)

// FuzzRender: any template text either renders or fails with an error; nothing
// panics, and the output limit holds.
func FuzzRender(f *testing.F) {
	for _, s := range []string{
		`{{ .Machine.Name }}`, `{{ secret "db" | toJson }}`, `{{ secretURL "db" "5m" }}`, `{{ range .Machine.Facts.disks }}{{ . }}{{ end }}`,
		`{{ template "x" }}`, `{{ define "x" }}{{ template "x" }}{{ end }}`, `{{ range 1000 }}xxxxxxxxxx{{ end }}`, `{{ range .Secrets }}{{ range $.Secrets }}{{ . }}{{ end }}{{ end }}`,
		`{{ index .Machine.Labels "role" | indent 4 }}`, `{{ printf "%s" (secret "db") | b64enc | b64dec }}`, `{{`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tmpl string) {
		out, err := Execute(Target{Kind: KindFile, Part: "f"}, tmpl, data, Options{MaxBytes: 4096, Secrets: fakeSecrets{}})
		if err == nil && len(out) > 4096 {
			t.Fatalf("%d bytes past the limit", len(out))
		}
	})
}

// FuzzValidateCloudInit and FuzzValidateIgnition: validators never panic.
func FuzzValidateCloudInit(f *testing.F) {
	for _, s := range []string{"#cloud-config\nhostname: x\n", "instance-id: a\n", "version: 2\n", "a: &a [*a]\n", "#cloud-config\n- !!binary x\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range CloudInitParts {
			_ = ValidateCloudInit(p, []byte(s))
		}
	})
}

func FuzzValidateIgnition(f *testing.F) {
	for _, c := range ignitionCases {
		f.Add(c.config)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_ = ValidateIgnition([]byte(s))
	})
}
