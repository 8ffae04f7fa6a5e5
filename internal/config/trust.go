package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// AddCA makes a rendered config trust Kiln's CA for the HTTPS fetches it makes of
// Kiln (secret handles, further configs), so that the consumer verifies Kiln instead
// of trusting whoever answers:
//   - Ignition: ignition.security.tls.certificateAuthorities gets {"source": a data
//     URL of the PEM} (spec 3.0.0 and later);
//   - cloud-init #cloud-config user-data and vendor-data: ca_certs.trusted gets the
//     PEM (cloud-init's ca_certs module).
//
// Other targets (meta-data, network-config, scripts, generic files) are returned as
// they are. A CA already listed is not added again. caPEM empty: out unchanged.
func AddCA(target Target, out, caPEM []byte) ([]byte, error) {
	if len(bytes.TrimSpace(caPEM)) == 0 {
		return out, nil
	}
	switch {
	case target.Kind == KindIgnition:
		return addIgnitionCA(out, caPEM)
	case target.Kind == KindCloudInit && (target.Part == "user-data" || target.Part == "vendor-data"):
		first, _, _ := strings.Cut(string(out), "\n")
		if strings.TrimRight(first, "\r \t") != "#cloud-config" {
			return out, nil // a script or an include: cloud-init's ca_certs does not apply
		}
		return addCloudConfigCA(out, caPEM)
	}
	return out, nil
}

// dataURL is RFC 2397 with percent-encoding: what Ignition's examples use for a PEM.
func pemDataURL(caPEM []byte) string {
	return "data:," + url.PathEscape(string(caPEM))
}

func addIgnitionCA(out, caPEM []byte) ([]byte, error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber() // keep numbers (modes, sizes) exactly as written
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return nil, fmt.Errorf("add Kiln's CA to the Ignition config: not a JSON object: %v", err)
	}
	ign, err := objectAt(doc, "ignition")
	if err != nil {
		return nil, err
	}
	sec, err := objectAt(ign, "security")
	if err != nil {
		return nil, err
	}
	tlsObj, err := objectAt(sec, "tls")
	if err != nil {
		return nil, err
	}
	src := pemDataURL(caPEM)
	var cas []any
	switch v := tlsObj["certificateAuthorities"].(type) {
	case nil:
	case []any:
		cas = v
	default:
		return nil, errors.New("add Kiln's CA to the Ignition config: ignition.security.tls.certificateAuthorities is not a list")
	}
	if !slices.ContainsFunc(cas, func(c any) bool { m, ok := c.(map[string]any); return ok && m["source"] == src }) {
		cas = append(cas, map[string]any{"source": src})
	}
	tlsObj["certificateAuthorities"] = cas
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// objectAt returns m[key] as an object, creating it when absent.
func objectAt(m map[string]any, key string) (map[string]any, error) {
	switch v := m[key].(type) {
	case nil:
		o := map[string]any{}
		m[key] = o
		return o, nil
	case map[string]any:
		return v, nil
	}
	return nil, fmt.Errorf("add Kiln's CA to the Ignition config: %q is not an object", key)
}

func addCloudConfigCA(out, caPEM []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("add Kiln's CA to the cloud-config: %w", err)
	}
	var root *yaml.Node
	switch {
	case doc.Kind == 0: // only the #cloud-config line
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}
	case doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode:
		root = doc.Content[0]
	default:
		return nil, errors.New("add Kiln's CA to the cloud-config: not a YAML mapping")
	}
	caCerts := mappingValue(root, "ca_certs", yaml.MappingNode)
	if caCerts == nil {
		return nil, errors.New("add Kiln's CA to the cloud-config: ca_certs is not a mapping")
	}
	trusted := mappingValue(caCerts, "trusted", yaml.SequenceNode)
	if trusted == nil {
		return nil, errors.New("add Kiln's CA to the cloud-config: ca_certs.trusted is not a list")
	}
	pemText := string(caPEM)
	if !slices.ContainsFunc(trusted.Content, func(n *yaml.Node) bool { return strings.TrimSpace(n.Value) == strings.TrimSpace(pemText) }) {
		trusted.Content = append(trusted.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Style: yaml.LiteralStyle, Value: pemText})
	}
	body, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, fmt.Errorf("add Kiln's CA to the cloud-config: %w", err)
	}
	// yaml.v3 keeps the #cloud-config line as the document's head comment; make sure
	// it is the first line whatever the input's comments were.
	if !bytes.HasPrefix(body, []byte("#cloud-config\n")) {
		body = append([]byte("#cloud-config\n"), body...)
	}
	return body, nil
}

// mappingValue returns the value node of key in mapping m, adding an empty one of
// kind when absent; nil if the existing value is of another kind.
func mappingValue(m *yaml.Node, key string, kind yaml.Kind) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			v := m.Content[i+1]
			if v.Kind == kind {
				return v
			}
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				v.Kind, v.Tag, v.Value = kind, "", ""
				return v
			}
			return nil
		}
	}
	v := &yaml.Node{Kind: kind}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return v
}
