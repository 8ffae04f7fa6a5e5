package resource

import (
	"fmt"
	"slices"
	"strings"
)

// Selector is a parsed label selector in kubectl syntax:
// "role=web,rack!=r2", "env in (prod,staging)", "gpu", "!decommissioned".
type Selector struct {
	reqs []requirement
	text string
}

type requirement struct {
	key    string
	op     string // "=", "!=", "in", "notin", "exists", "!exists"
	values []string
}

// ParseSelector parses a label selector; the empty string selects everything.
func ParseSelector(s string) (Selector, error) {
	sel := Selector{text: s}
	s = strings.TrimSpace(s)
	if s == "" {
		return sel, nil
	}
	for _, part := range splitSelector(s) {
		part = strings.TrimSpace(part)
		if part == "" {
			return sel, fmt.Errorf("label selector %q: empty requirement", s)
		}
		r, err := parseRequirement(part)
		if err != nil {
			return sel, fmt.Errorf("label selector %q: %v", s, err)
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

// splitSelector splits on commas outside parentheses.
func splitSelector(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func parseRequirement(p string) (requirement, error) {
	checkKey := func(k string) error {
		if !labelKeyRE.MatchString(k) {
			return fmt.Errorf("%q is not a valid label key", k)
		}
		return nil
	}
	checkVal := func(v string) error {
		if !labelValueRE.MatchString(v) {
			return fmt.Errorf("%q is not a valid label value", v)
		}
		return nil
	}
	if strings.HasPrefix(p, "!") {
		k := strings.TrimSpace(p[1:])
		return requirement{key: k, op: "!exists"}, checkKey(k)
	}
	for _, op := range []string{"!=", "==", "="} {
		if i := strings.Index(p, op); i >= 0 {
			k, v := strings.TrimSpace(p[:i]), strings.TrimSpace(p[i+len(op):])
			if err := checkKey(k); err != nil {
				return requirement{}, err
			}
			if err := checkVal(v); err != nil {
				return requirement{}, err
			}
			if op == "==" {
				op = "="
			}
			return requirement{key: k, op: op, values: []string{v}}, nil
		}
	}
	fields := strings.Fields(p)
	if len(fields) == 1 {
		return requirement{key: fields[0], op: "exists"}, checkKey(fields[0])
	}
	if len(fields) >= 2 && (fields[1] == "in" || fields[1] == "notin") {
		k := fields[0]
		if err := checkKey(k); err != nil {
			return requirement{}, err
		}
		rest := strings.TrimSpace(strings.Join(fields[2:], " "))
		if !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
			return requirement{}, fmt.Errorf("%q: values must be in parentheses: %s %s (a,b)", p, k, fields[1])
		}
		var vals []string
		for _, v := range strings.Split(rest[1:len(rest)-1], ",") {
			v = strings.TrimSpace(v)
			if err := checkVal(v); err != nil {
				return requirement{}, err
			}
			vals = append(vals, v)
		}
		return requirement{key: k, op: fields[1], values: vals}, nil
	}
	return requirement{}, fmt.Errorf("%q: expected key=value, key!=value, key in (a,b), key notin (a,b), key or !key", p)
}

// Empty reports whether the selector selects everything.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// String returns the selector as given.
func (s Selector) String() string { return s.text }

// Matches reports whether the labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, has := labels[r.key]
		switch r.op {
		case "=":
			if !has || v != r.values[0] {
				return false
			}
		case "!=":
			if has && v == r.values[0] {
				return false
			}
		case "in":
			if !has || !slices.Contains(r.values, v) {
				return false
			}
		case "notin":
			if has && slices.Contains(r.values, v) {
				return false
			}
		case "exists":
			if !has {
				return false
			}
		case "!exists":
			if has {
				return false
			}
		}
	}
	return true
}
