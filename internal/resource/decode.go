package resource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// MaxDocuments bounds how many documents one manifest stream may hold.
const MaxDocuments = 10000

// ParseManifests reads a YAML (or JSON) stream of one or more documents and returns the
// validated objects. Any error names the document and field; nothing is returned then.
func ParseManifests(r io.Reader, source string) ([]*Object, error) {
	dec := yaml.NewDecoder(r)
	var objs []*Object
	for i := 1; ; i++ {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %v", source, i, err)
		}
		if doc == nil { // empty document between two "---"
			continue
		}
		if i > MaxDocuments {
			return nil, fmt.Errorf("%s: more than %d documents", source, MaxDocuments)
		}
		// A list (`kiln get -o json`'s {"items": [...]}, or kind: List) holds objects.
		items, isList := []any{doc}, false
		if m, ok := doc.(map[string]any); ok && m["items"] != nil && (m["kind"] == nil || m["kind"] == "List") {
			l, ok := m["items"].([]any)
			if !ok {
				return nil, fmt.Errorf("%s: document %d: items: not a list", source, i)
			}
			items, isList = l, true
		}
		for j, item := range items {
			where := fmt.Sprintf("document %d", i)
			if isList {
				where = fmt.Sprintf("document %d: items[%d]", i, j)
			}
			if len(objs) >= MaxDocuments {
				return nil, fmt.Errorf("%s: more than %d objects", source, MaxDocuments)
			}
			raw, err := json.Marshal(item)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: not a mapping of string keys: %v", source, where, err)
			}
			obj, err := DecodeJSON(raw)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", source, where, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs, nil
}

// DecodeJSON parses and validates one object in its JSON form.
func DecodeJSON(raw []byte) (*Object, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("malformed JSON: %v", err)
	}
	if d.More() {
		return nil, fmt.Errorf("malformed JSON: data after the object")
	}
	return Decode(v)
}

// Decode validates one object given as a generic JSON value (maps, slices, json.Number,
// strings, bools) and returns it with its spec in canonical form.
func Decode(v any) (*Object, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("expected an object with kind, metadata and spec, got %s", jsonType(v))
	}
	kindName, _ := m["kind"].(string)
	if kindName == "" {
		return nil, fmt.Errorf("kind: required (one of %s)", KindNames())
	}
	kind, ok := LookupKind(kindName)
	if !ok || kind.Name != kindName {
		if ok {
			return nil, fmt.Errorf("kind: %q: did you mean %q?", kindName, kind.Name)
		}
		return nil, fmt.Errorf("kind: %q is not one of %s", kindName, KindNames())
	}
	obj := &Object{APIVersion: APIVersion, Kind: kind.Name}
	fail := func(err error) (*Object, error) {
		return nil, &ObjectError{Kind: kind.Name, Name: obj.Metadata.Name, Err: err}
	}
	// The name first, so that every later error can name the object.
	if md, ok := m["metadata"].(map[string]any); ok {
		obj.Metadata.Name, _ = md["name"].(string)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch k {
		case "kind", "metadata", "spec", "status":
		case "apiVersion":
			// One version so far: a manifest written for another (a Kubernetes
			// apiVersion pasted by mistake, or a future kiln.dev/v2) is refused rather
			// than read with this version's meaning.
			v, ok := m[k].(string)
			if !ok {
				return fail(fmt.Errorf("apiVersion: expected the string %s, got %s", APIVersion, jsonType(m[k])))
			}
			if v != APIVersion {
				return fail(fmt.Errorf("apiVersion: %q is not supported: Kiln manifests are %s (or omit the field)", v, APIVersion))
			}
		default:
			return fail(fmt.Errorf("%s: unknown field", k))
		}
	}
	md, ok := m["metadata"].(map[string]any)
	if !ok {
		return fail(fmt.Errorf("metadata: required, with at least a name"))
	}
	for _, k := range slices.Sorted(maps.Keys(md)) {
		val := md[k]
		switch k {
		case "name":
			if _, ok := val.(string); !ok {
				return fail(fmt.Errorf("metadata.name: expected a string, got %s", jsonType(val)))
			}
		case "labels":
			if val == nil {
				continue
			}
			lm, ok := val.(map[string]any)
			if !ok {
				return fail(fmt.Errorf("metadata.labels: expected a mapping, got %s", jsonType(val)))
			}
			obj.Metadata.Labels = map[string]string{}
			for _, lk := range slices.Sorted(maps.Keys(lm)) {
				s, ok := lm[lk].(string)
				if !ok {
					return fail(fmt.Errorf("metadata.labels.%s: expected a string, got %s (quote it)", lk, jsonType(lm[lk])))
				}
				obj.Metadata.Labels[lk] = s
			}
		case "annotations":
			if val == nil {
				continue
			}
			am, ok := val.(map[string]any)
			if !ok {
				return fail(fmt.Errorf("metadata.annotations: expected a mapping, got %s", jsonType(val)))
			}
			obj.Metadata.Annotations = make(map[string]string, len(am))
			for _, ak := range slices.Sorted(maps.Keys(am)) {
				s, ok := am[ak].(string)
				if !ok {
					return fail(fmt.Errorf("metadata.annotations.%s: expected a string, got %s (quote it)", ak, jsonType(am[ak])))
				}
				obj.Metadata.Annotations[ak] = s
			}
		case "resourceVersion":
			switch rv := val.(type) {
			case string:
				obj.Metadata.ResourceVersion = rv
			case json.Number:
				obj.Metadata.ResourceVersion = rv.String()
			default:
				return fail(fmt.Errorf("metadata.resourceVersion: expected a string, got %s", jsonType(val)))
			}
		case "createdAt", "updatedAt":
			// Set by Kiln; accepted so that `get -o yaml` output re-applies.
		default:
			return fail(fmt.Errorf("metadata.%s: unknown field", k))
		}
	}
	if err := ValidateName(obj.Metadata.Name); err != nil {
		return fail(err)
	}
	if err := ValidateLabels(obj.Metadata.Labels); err != nil {
		return fail(err)
	}
	if err := ValidateAnnotations(obj.Metadata.Annotations); err != nil {
		return fail(err)
	}
	specV, ok := m["spec"]
	if !ok || specV == nil {
		specV = map[string]any{}
	}
	if err := checkValue("spec", specV, kind.SpecType); err != nil {
		return fail(err)
	}
	spec, err := SpecFromJSON(kind, mustJSON(specV))
	if err != nil {
		return fail(err)
	}
	obj.Spec = mustJSON(spec)
	if st, ok := m["status"]; ok && st != nil {
		if _, ok := st.(map[string]any); !ok {
			return fail(fmt.Errorf("status: expected a mapping, got %s", jsonType(st)))
		}
		// Status is Kiln's: kept only so callers that own it (the server) can use it.
		obj.Status = mustJSON(st)
	}
	return obj, nil
}

// SpecFromJSON decodes and validates a spec of the given kind. The returned spec is
// normalized (MACs in canonical form, defaults filled).
func SpecFromJSON(kind *Kind, raw []byte) (Spec, error) {
	spec := reflect.New(kind.SpecType).Interface().(Spec)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, spec); err != nil {
			return nil, fmt.Errorf("spec: %v", err)
		}
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return spec, nil
}

// Typed decodes an object's spec into its kind's Go type.
func Typed[T any](o *Object) (*T, error) {
	var t T
	if len(o.Spec) == 0 {
		return &t, nil
	}
	if err := json.Unmarshal(o.Spec, &t); err != nil {
		return nil, fmt.Errorf("%s: spec: %w", o.Key(), err)
	}
	return &t, nil
}

// UniqueKeys returns the inventory-wide unique keys an object claims.
func UniqueKeys(o *Object) ([]string, error) {
	kind, ok := LookupKind(o.Kind)
	if !ok {
		return nil, nil
	}
	spec := reflect.New(kind.SpecType).Interface()
	uk, ok := spec.(UniqueKeyer)
	if !ok {
		return nil, nil
	}
	if err := json.Unmarshal(o.Spec, spec); err != nil {
		return nil, err
	}
	return uk.UniqueKeys(), nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called on values that came from JSON
	}
	return b
}

var (
	timeType    = reflect.TypeOf(time.Time{})
	bootUKIType = reflect.TypeOf(BootUKI(""))
)

// checkValue walks a generic JSON value against a Go type, so that unknown fields and
// wrong types are reported with their full path (encoding/json reports neither well).
func checkValue(path string, v any, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v == nil {
		return nil // null: the zero value
	}
	if t == bootUKIType {
		switch v.(type) {
		case bool, string:
			return nil // BootUKI.UnmarshalJSON
		}
		return fmt.Errorf("%s: expected true, false or an artifact name, got %s", path, jsonType(v))
	}
	if t == timeType {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: expected an RFC 3339 time, got %s", path, jsonType(v))
		}
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			return fmt.Errorf("%s: %q is not an RFC 3339 time like 2026-01-02T15:04:05Z", path, s)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: expected a mapping, got %s", path, jsonType(v))
		}
		fields := map[string]reflect.StructField{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			f, ok := fields[k]
			if !ok {
				return fmt.Errorf("%s.%s: unknown field (known: %s)", path, k, strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
			}
			if err := checkValue(path+"."+k, m[k], f.Type); err != nil {
				return err
			}
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: expected a mapping, got %s", path, jsonType(v))
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if err := checkValue(path+"."+k, m[k], t.Elem()); err != nil {
				return err
			}
		}
	case reflect.Slice:
		s, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: expected a list, got %s", path, jsonType(v))
		}
		for i, e := range s {
			if err := checkValue(fmt.Sprintf("%s[%d]", path, i), e, t.Elem()); err != nil {
				return err
			}
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s: expected a string, got %s", path, jsonType(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: expected true or false, got %s", path, jsonType(v))
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%s: expected an integer, got %s", path, jsonType(v))
		}
		if _, err := n.Int64(); err != nil {
			return fmt.Errorf("%s: %s is not an integer", path, n)
		}
	case reflect.Interface:
		// any value
	default:
		return fmt.Errorf("%s: unsupported field type %s", path, t)
	}
	return nil
}

func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("a string (%q)", truncate(x, 40))
	case json.Number, float64, int, int64:
		return fmt.Sprintf("a number (%v)", x)
	case bool:
		return fmt.Sprintf("a boolean (%v)", x)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// SortForApply orders objects so that referenced kinds come first, then by name.
func SortForApply(objs []*Object) {
	sort.SliceStable(objs, func(i, j int) bool {
		oi, oj := Order(objs[i].Kind), Order(objs[j].Kind)
		if oi != oj {
			return oi < oj
		}
		return objs[i].Metadata.Name < objs[j].Metadata.Name
	})
}
