package sqlstore

import (
	"encoding/json"
	"strings"
)

// encodeStringMap is the column of an object's labels or annotations: a JSON
// object, "{}" when there are none (the columns' default, which reads back as nil).
func encodeStringMap(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// decodeStringMap parses a labels or annotations column; "" and "{}" are nil, as
// the object had no entries.
func decodeStringMap(s string) (map[string]string, error) {
	if s == "" || s == "{}" {
		return nil, nil
	}
	return decodeLabels(s)
}

// decodeLabels parses a stored labels or annotations column. Columns are written by
// json.Marshal and label keys and values never need escapes, so the common form
// {"k":"v",...} is read directly (List decodes one per object); anything else (an
// annotation with a quote or newline, labels a migration rewrote) goes through
// encoding/json.
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
