package sqlstore

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
)

// annotationsKey holds an object's annotations (as a JSON string) in the labels
// column. The column is the object's string-map metadata; keeping annotations there
// needs no schema change, and the key cannot collide with a label: a label key starts
// with a letter or digit. Selectors see only the labels (decodeMetadataMaps removes
// the key), and objects without annotations are stored exactly as before.
const annotationsKey = "@annotations"

// encodeMetadataMaps is the labels column for an object's labels and annotations.
func encodeMetadataMaps(labels, annotations map[string]string) (string, error) {
	if len(labels) == 0 && len(annotations) == 0 {
		return "{}", nil
	}
	m := labels
	if len(annotations) > 0 {
		a, err := json.Marshal(annotations)
		if err != nil {
			return "", fmt.Errorf("encode annotations: %w", err)
		}
		m = maps.Clone(labels)
		if m == nil {
			m = map[string]string{}
		}
		m[annotationsKey] = string(a)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode labels: %w", err)
	}
	return string(b), nil
}

// decodeMetadataMaps parses a labels column written by encodeMetadataMaps.
func decodeMetadataMaps(s string) (labels, annotations map[string]string, err error) {
	labels, err = decodeLabels(s)
	if err != nil {
		return nil, nil, err
	}
	a, ok := labels[annotationsKey]
	if !ok {
		return labels, nil, nil
	}
	delete(labels, annotationsKey)
	if len(labels) == 0 {
		labels = nil
	}
	if err := json.Unmarshal([]byte(a), &annotations); err != nil {
		return nil, nil, fmt.Errorf("annotations: %w", err)
	}
	return labels, annotations, nil
}

// decodeLabels parses a stored labels column. Labels are written by json.Marshal and
// their keys and values never need escapes, so the common form {"k":"v",...} is read
// directly (List decodes one per object); anything else goes through encoding/json.
func decodeLabels(s string) (map[string]string, error) {
	if m, ok := decodeFlat(s); ok {
		return m, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeFlat parses {"k":"v",...} without whitespace or escapes; ok is false for any
// other input.
func decodeFlat(s string) (m map[string]string, ok bool) {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' || strings.IndexByte(s, '\\') >= 0 {
		return nil, false
	}
	m = make(map[string]string, strings.Count(s, ":")) // at most one ':' outside strings per label
	rest := s[1 : len(s)-1]
	if rest == "" {
		return m, true
	}
	str := func() (string, bool) {
		if len(rest) < 2 || rest[0] != '"' {
			return "", false
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return "", false
		}
		v := rest[1 : 1+end]
		rest = rest[end+2:]
		return v, true
	}
	for {
		k, ok := str()
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return nil, false
		}
		rest = rest[1:]
		v, ok := str()
		if !ok {
			return nil, false
		}
		m[k] = v
		if rest == "" {
			return m, true
		}
		if rest[0] != ',' {
			return nil, false
		}
		rest = rest[1:]
	}
}
