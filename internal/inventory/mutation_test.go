package inventory

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/resource"
)

func machineObject(labels map[string]string, spec string) *resource.Object {
	return &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: "web-1", Labels: labels}, Spec: json.RawMessage(spec)}
}

// specWithFields is a spec of n top-level fields f00, f01, ...
func specWithFields(n int) string {
	fields := make([]string, n)
	for i := range fields {
		fields[i] = fmt.Sprintf(`"f%02d":%d`, i, i)
	}
	return "{" + strings.Join(fields, ",") + "}"
}

// TestSummary: an audit summary names the changed field paths (top-level ones for
// a create), in order, at most maxSummaryFields of them and how many more, and
// never a value.
func TestSummary(t *testing.T) {
	base := machineObject(map[string]string{"rack": "r1"}, `{"interfaces":[{"mac":"52:54:00:00:00:01"}],"boot":{"agent":true}}`)
	cases := []struct {
		name       string
		action     string
		prev, next *resource.Object
		want       string
	}{
		{"delete", "delete", base, nil, "deleted"},
		{"create, nested fields named at the top", "create", nil, base,
			"created: metadata.labels.rack, spec.boot, spec.interfaces"},
		{"create, nothing set", "create", nil, machineObject(nil, `{}`), "created"},
		{"create, empty spec", "create", nil, machineObject(nil, ``), "created"},
		{"create, an empty list", "create", nil, machineObject(nil, `{"interfaces":[]}`), "created: spec.interfaces"},
		{"update, nothing changed", "update", base, machineObject(map[string]string{"rack": "r1"}, `{"boot":{"agent":true},"interfaces":[{"mac":"52:54:00:00:00:01"}]}`),
			"no field changed"},
		{"update, a nested value", "update", base, machineObject(map[string]string{"rack": "r1"}, `{"interfaces":[{"mac":"52:54:00:00:00:02"}],"boot":{"agent":true}}`),
			"changed: spec.interfaces[0].mac"},
		{"update, a label removed and a field added", "update", base, machineObject(nil, `{"interfaces":[{"mac":"52:54:00:00:00:01"}],"boot":{"agent":true},"bmc":{"address":"10.0.0.9"}}`),
			"changed: metadata.labels.rack, spec.bmc.address"},
		{"update, a list emptied", "update", base, machineObject(map[string]string{"rack": "r1"}, `{"interfaces":[],"boot":{"agent":true}}`),
			"changed: spec.interfaces, spec.interfaces[0].mac"},
		{"create, exactly the limit", "create", nil, machineObject(nil, specWithFields(maxSummaryFields)),
			"created: spec.f00, spec.f01, spec.f02, spec.f03, spec.f04, spec.f05, spec.f06, spec.f07, spec.f08, spec.f09, spec.f10, spec.f11"},
		{"create, over the limit", "create", nil, machineObject(nil, specWithFields(maxSummaryFields+3)),
			"created: spec.f00, spec.f01, spec.f02, spec.f03, spec.f04, spec.f05, spec.f06, spec.f07, spec.f08, spec.f09, spec.f10, spec.f11 and 3 more"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Summary(c.action, c.prev, c.next)
			if got != c.want {
				t.Errorf("Summary = %q, want %q", got, c.want)
			}
			if strings.Contains(got, "52:54") || strings.Contains(got, "10.0.0.9") {
				t.Errorf("Summary %q shows a value", got)
			}
		})
	}
}

// TestSameContent: applying an object again is a no-op when its labels and spec
// are equal as JSON values (key order, an empty spec and no spec alike), and not
// otherwise.
func TestSameContent(t *testing.T) {
	cases := []struct {
		name      string
		cur, in   *resource.Object
		wantEqual bool
	}{
		{"key order", machineObject(nil, `{"a":1,"b":2}`), machineObject(nil, `{"b":2,"a":1}`), true},
		{"empty and missing spec", machineObject(nil, `{}`), machineObject(nil, ``), true},
		{"value changed", machineObject(nil, `{"a":1}`), machineObject(nil, `{"a":2}`), false},
		{"label changed", machineObject(map[string]string{"x": "1"}, `{}`), machineObject(map[string]string{"x": "2"}, `{}`), false},
		{"label added", machineObject(nil, `{}`), machineObject(map[string]string{"x": "1"}, `{}`), false},
		{"annotation added", machineObject(nil, `{}`), annotated(machineObject(nil, `{}`), map[string]string{"a": "1"}), false},
		{"annotation changed", annotated(machineObject(nil, `{}`), map[string]string{"a": "1"}), annotated(machineObject(nil, `{}`), map[string]string{"a": "2"}), false},
		{"annotations equal", annotated(machineObject(nil, `{}`), map[string]string{"a": "1"}), annotated(machineObject(nil, `{}`), map[string]string{"a": "1"}), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := sameContent(c.cur, c.in); got != c.wantEqual {
				t.Errorf("sameContent = %v, want %v", got, c.wantEqual)
			}
		})
	}
}

func annotated(o *resource.Object, a map[string]string) *resource.Object {
	o.Metadata.Annotations = a
	return o
}
