package agentwire

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Args are an action's arguments as the server rendered them (JSON: strings,
// float64 numbers, bools, lists and maps). The accessors name the argument in their
// errors: "args.disk: required".
type Args map[string]any

// Has reports whether key is set (to anything but null).
func (a Args) Has(key string) bool { return a[key] != nil }

// String returns a string argument; numbers and bools are formatted.
func (a Args) String(key string) (string, error) {
	switch v := a[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case int:
		return strconv.Itoa(v), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return "", fmt.Errorf("args.%s: %T is not a string", key, a[key])
}

// Required returns a non-empty string argument.
func (a Args) Required(key string) (string, error) {
	s, err := a.String(key)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", fmt.Errorf("args.%s: required", key)
	}
	return s, nil
}

// Int returns an integer argument (a JSON number or a decimal string), or def.
func (a Args) Int(key string, def int64) (int64, error) {
	switch v := a[key].(type) {
	case nil:
		return def, nil
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			return 0, fmt.Errorf("args.%s: %v is not an integer", key, v)
		}
		return int64(v), nil
	case int:
		return int64(v), nil
	case int64:
		return v, nil
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 0, 64)
		if err != nil {
			return 0, fmt.Errorf("args.%s: %q is not an integer", key, v)
		}
		return n, nil
	}
	return 0, fmt.Errorf("args.%s: %T is not an integer", key, a[key])
}

// Bool returns a boolean argument (true/false or "true"/"false"), or def.
func (a Args) Bool(key string, def bool) (bool, error) {
	switch v := a[key].(type) {
	case nil:
		return def, nil
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("args.%s: %q is not true or false", key, v)
		}
		return b, nil
	}
	return false, fmt.Errorf("args.%s: %T is not true or false", key, a[key])
}

// Duration returns a duration argument ("90s", "5m"), or def.
func (a Args) Duration(key string, def time.Duration) (time.Duration, error) {
	s, err := a.String(key)
	if err != nil || s == "" {
		return def, err
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("args.%s: %q is not a positive duration like 90s or 5m", key, s)
	}
	return d, nil
}

// Mode returns a file mode given as an octal string ("0644", "644") or a number
// (420, as YAML and JSON decode 0644 without quotes: YAML 1.1 reads it as octal).
func (a Args) Mode(key string, def uint32) (uint32, error) {
	var m uint64
	switch v := a[key].(type) {
	case nil:
		return def, nil
	case string:
		s := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(v), "0o"), "0")
		if s == "" {
			s = "0"
		}
		n, err := strconv.ParseUint(s, 8, 32)
		if err != nil {
			return 0, fmt.Errorf("args.%s: %q is not an octal mode like 0644", key, v)
		}
		m = n
	case float64:
		if v < 0 || v != math.Trunc(v) {
			return 0, fmt.Errorf("args.%s: %v is not a mode", key, v)
		}
		m = uint64(v)
	default:
		return 0, fmt.Errorf("args.%s: %T is not a mode", key, a[key])
	}
	if m > 0o7777 {
		return 0, fmt.Errorf("args.%s: %o has bits beyond 07777", key, m)
	}
	return uint32(m), nil
}

// Strings returns a list of strings (a JSON list, or one string).
func (a Args) Strings(key string) ([]string, error) {
	switch v := a[key].(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				if f, isNum := e.(float64); isNum {
					s = strconv.FormatFloat(f, 'f', -1, 64)
				} else {
					return nil, fmt.Errorf("args.%s[%d]: %T is not a string", key, i, e)
				}
			}
			out[i] = s
		}
		return out, nil
	case []string:
		return v, nil
	}
	return nil, fmt.Errorf("args.%s: %T is not a list of strings", key, a[key])
}

// Decode converts the argument into v (a struct with json tags) through JSON.
func (a Args) Decode(key string, v any) error {
	b, err := json.Marshal(a[key])
	if err != nil {
		return fmt.Errorf("args.%s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("args.%s: %w", key, err)
	}
	return nil
}
