package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	ignition "github.com/coreos/ignition/v2/config/v3_5"
	"gopkg.in/yaml.v3"
)

// Validate checks a rendered config for its target's kind. Generic files are not
// checked: Kiln cannot know every installer's format.
func Validate(target Target, out []byte) error {
	switch target.Kind {
	case KindIgnition:
		return ValidateIgnition(out)
	case KindCloudInit:
		return ValidateCloudInit(target.Part, out)
	}
	return nil
}

// ValidateIgnition parses and validates an Ignition config with Ignition's own code
// (github.com/coreos/ignition/v2): spec versions 3.0.0 to 3.5.0 are accepted, as the
// Ignition release Kiln is built with accepts them. Machines run their own Ignition:
// keep to the newest spec your images' Ignition knows (Debian 12's ignition-validate,
// 2.14, knows up to 3.3.0).
func ValidateIgnition(raw []byte) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return errors.New("ignition config is empty")
	}
	if !json.Valid(raw) {
		var v any
		err := json.Unmarshal(raw, &v)
		return fmt.Errorf("not valid JSON: %v", err)
	}
	_, rpt, err := ignition.ParseCompatibleVersion(raw)
	if err != nil {
		if msg := strings.TrimSpace(rpt.String()); msg != "" {
			return fmt.Errorf("%v: %s", err, oneLine(msg))
		}
		return err
	}
	if rpt.IsFatal() {
		return errors.New(oneLine(rpt.String()))
	}
	return nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// ValidateCloudInit checks one NoCloud part:
//   - meta-data: a YAML mapping with an instance-id (NoCloud needs one);
//   - user-data, vendor-data: empty, or a format cloud-init acts on; #cloud-config
//     must be a YAML mapping;
//   - network-config: a YAML mapping of network config version 1 or 2.
func ValidateCloudInit(part string, out []byte) error {
	switch part {
	case "meta-data":
		m, err := yamlMapping(out)
		if err != nil {
			return err
		}
		if id, _ := m["instance-id"].(string); strings.TrimSpace(id) == "" {
			return errors.New("meta-data: instance-id is required (cloud-init NoCloud)")
		}
		return nil
	case "user-data", "vendor-data":
		return validateUserData(part, out)
	case "network-config":
		m, err := yamlMapping(out)
		if err != nil {
			return err
		}
		if inner, ok := m["network"].(map[string]any); ok {
			m = inner
		}
		switch v := m["version"].(type) {
		case int:
			if v == 1 || v == 2 {
				return nil
			}
		}
		return errors.New("network-config: version must be 1 or 2")
	}
	return fmt.Errorf("unknown cloud-init part %q", part)
}

// userDataFormats are the first-line markers cloud-init acts on (cloud-init's
// "User-Data Formats"); anything else it ignores, which would be a silent no-op.
var userDataFormats = []string{"#cloud-config", "#!", "#include", "#cloud-boothook", "#part-handler",
	"#upstart-job", "## template: jinja", "Content-Type:"}

func validateUserData(part string, out []byte) error {
	if len(bytes.TrimSpace(out)) == 0 {
		return nil
	}
	first, _, _ := strings.Cut(string(out), "\n")
	first = strings.TrimRight(first, "\r \t")
	known := false
	for _, f := range userDataFormats {
		if strings.HasPrefix(first, f) {
			known = true
			break
		}
	}
	if !known {
		return fmt.Errorf("%s: first line %q is not a format cloud-init acts on (#cloud-config, #!, #include, ...)", part, truncate(first, 40))
	}
	if first != "#cloud-config" {
		return nil
	}
	if _, err := yamlMapping(out); err != nil {
		return fmt.Errorf("%s: #cloud-config: %w", part, err)
	}
	return nil
}

// yamlMapping parses one YAML document that must be a mapping (empty is an empty one).
func yamlMapping(b []byte) (map[string]any, error) {
	var docs []any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var v any
		err := dec.Decode(&v)
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			return nil, fmt.Errorf("not valid YAML: %v", err)
		}
		docs = append(docs, v)
	}
	switch len(docs) {
	case 0:
		return map[string]any{}, nil
	case 1:
	default:
		return nil, fmt.Errorf("%d YAML documents, want one", len(docs))
	}
	if docs[0] == nil {
		return map[string]any{}, nil
	}
	m, ok := docs[0].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("a YAML %s, want a mapping", yamlKind(docs[0]))
	}
	return m, nil
}

func yamlKind(v any) string {
	switch v.(type) {
	case []any:
		return "list"
	case string:
		return "string"
	case int, float64:
		return "number"
	case bool:
		return "boolean"
	}
	return fmt.Sprintf("%T", v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
