package sqlstore

import (
	"encoding/json"
	"strings"
)

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
