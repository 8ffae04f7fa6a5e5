package server

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/config"
	"github.com/kilnhq/kiln/internal/resource"
)

// checkProfileTemplates executes every template of a profile (the kernel command
// line, each config) against a sample machine, so that a template naming a field
// that does not exist ({{ .ConfigURL }}) is refused at apply with its field path
// instead of failing when a machine boots. A missing map key (a label or fact the
// sample machine lacks) is not an error here: real machines may have it.
func checkProfileTemplates(o *resource.Object) error {
	ps, err := resource.Typed[resource.ProfileSpec](o)
	if err != nil {
		return err
	}
	if c := ps.Boot.Cmdline; c != "" {
		t, err := template.New(o.Metadata.Name).Option("missingkey=error").Parse(c)
		if err != nil {
			return fmt.Errorf("spec.boot.cmdline: %v", err)
		}
		data := boot.TemplateData{Profile: o.Metadata.Name, ServerURL: "http://192.0.2.1:8080", MAC: "52:54:00:00:00:01",
			Machine: boot.MachineData{Name: "sample", Labels: map[string]string{}, IP: "192.0.2.10", Hostname: "sample"}}
		if err := t.Execute(discard{}, data); err != nil && !missingKey(err) {
			return fmt.Errorf("spec.boot.cmdline: %v (variables: .Machine.Name, .Machine.Labels, .Machine.IP, .Machine.Hostname, .Profile, .ServerURL, .MAC)", err)
		}
	}
	cs := ps.Configs
	if cs == nil {
		return nil
	}
	var targets []config.Target
	if cs.Ignition != "" {
		targets = append(targets, config.Target{Kind: config.KindIgnition})
	}
	for _, p := range slices.Sorted(maps.Keys(cs.CloudInit)) {
		targets = append(targets, config.Target{Kind: config.KindCloudInit, Part: p})
	}
	for _, f := range slices.Sorted(maps.Keys(cs.Files)) {
		targets = append(targets, config.Target{Kind: config.KindFile, Part: f})
	}
	data := config.Data{ServerURL: "http://192.0.2.1:8080", Secrets: ps.Secrets,
		Profile: config.Profile{Name: o.Metadata.Name, Labels: o.Metadata.Labels},
		Machine: config.Machine{Name: "sample", Labels: map[string]string{}, MAC: "52:54:00:00:00:01", IP: "192.0.2.10", Hostname: "sample",
			Interfaces: []resource.Interface{{MAC: "52:54:00:00:00:01", IP: "192.0.2.10", Hostname: "sample"}}, Facts: map[string]any{}}}
	for _, t := range targets {
		text, _ := t.Template(cs)
		if _, err := config.Execute(t, text, data, config.Options{Secrets: sampleSecrets{}}); err != nil && !missingKey(err) {
			return fmt.Errorf("%v (in a sample render; see the README's template variables)", err)
		}
	}
	return nil
}

func missingKey(err error) bool { return strings.Contains(err.Error(), "map has no entry for key") }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// sampleSecrets stands for the secret functions in a sample render: the values
// matter not, only that the template calls them correctly.
type sampleSecrets struct{}

func (sampleSecrets) Value(name string) (string, error) { return "sample-secret", nil }
func (sampleSecrets) URL(name string, ttl time.Duration) (string, error) {
	return "http://192.0.2.1:8080/secret-handles/sample", nil
}
