package inventory

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"sort"
	"strings"

	"github.com/kilnhq/kiln/internal/resource"
)

// sameContent reports whether applying in over cur would change nothing an operator owns.
func sameContent(cur, in *resource.Object) bool {
	return maps.Equal(cur.Metadata.Labels, in.Metadata.Labels) &&
		maps.Equal(cur.Metadata.Annotations, in.Metadata.Annotations) &&
		reflect.DeepEqual(generic(cur.Spec), generic(in.Spec))
}

func generic(raw json.RawMessage) any {
	var v any
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &v)
	}
	if m, ok := v.(map[string]any); ok && len(m) == 0 {
		return nil
	}
	return v
}

// maxSummaryFields bounds an audit summary's length.
const maxSummaryFields = 12

// Summary describes a change by the field paths it touched, never by their values
// (a value may be secret; the audit log is read by more people than the inventory).
func Summary(action string, prev, next *resource.Object) string {
	switch action {
	case "delete":
		return "deleted"
	case "create":
		return "created" + listPaths(topLevel(changedPaths(nil, next)))
	}
	paths := changedPaths(prev, next)
	if len(paths) == 0 {
		return "no field changed"
	}
	return "changed" + listPaths(paths)
}

// topLevel shortens paths to their first field under spec or metadata.labels
// ("spec.interfaces[0].mac" -> "spec.interfaces"), without duplicates.
func topLevel(paths []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range paths {
		depth := 2
		if strings.HasPrefix(p, "metadata.labels.") {
			depth = 3
		}
		parts := strings.SplitN(p, ".", depth+1)
		if len(parts) > depth {
			parts = parts[:depth]
		}
		short := strings.Join(parts, ".")
		if i := strings.IndexByte(short, '['); i >= 0 {
			short = short[:i]
		}
		if !seen[short] {
			seen[short] = true
			out = append(out, short)
		}
	}
	return out
}

func listPaths(paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	more := ""
	if len(paths) > maxSummaryFields {
		more = fmt.Sprintf(" and %d more", len(paths)-maxSummaryFields)
		paths = paths[:maxSummaryFields]
	}
	return ": " + strings.Join(paths, ", ") + more
}

func changedPaths(prev, next *resource.Object) []string {
	a, b := map[string]string{}, map[string]string{}
	flattenObject(prev, a)
	flattenObject(next, b)
	var out []string
	for k, v := range b {
		if w, ok := a[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func flattenObject(o *resource.Object, into map[string]string) {
	if o == nil {
		return
	}
	for k, v := range o.Metadata.Labels {
		into["metadata.labels."+k] = v
	}
	for k, v := range o.Metadata.Annotations {
		into["metadata.annotations."+k] = v
	}
	flatten("spec", generic(o.Spec), into)
}

func flatten(path string, v any, into map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			flatten(path+"."+k, e, into)
		}
	case []any:
		for i, e := range x {
			flatten(fmt.Sprintf("%s[%d]", path, i), e, into)
		}
		if len(x) == 0 {
			into[path] = "[]"
		}
	case nil:
	default:
		b, _ := json.Marshal(x)
		into[path] = string(b)
	}
}
