package sqlstore

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestDecodeLabels(t *testing.T) {
	for _, m := range []map[string]string{
		{},
		{"a": "b"},
		{"kiln.dev/rack": "r1", "role": "web", "empty": ""},
	} {
		b, _ := json.Marshal(m)
		if got, ok := decodeFlat(string(b)); !ok || !reflect.DeepEqual(got, m) {
			t.Errorf("decodeFlat(%s) = %v, %v", b, got, ok)
		}
	}
	for _, s := range []string{`{"a":"b\"c"}`, `{ "a" : "b" }`, `{"a":1}`, `{"a":"b",}`, `{"a"}`, `{"a":"b"`, `[]`, ``} {
		if _, ok := decodeFlat(s); ok {
			t.Errorf("decodeFlat(%s) accepted it", s)
		}
	}
	// The fallback handles what the fast path does not.
	got, err := decodeLabels(`{ "a" : "b\"c" }`)
	if err != nil || got["a"] != `b"c` {
		t.Errorf("decodeLabels fallback: %v %v", got, err)
	}
	if _, err := decodeLabels(`{"a":1}`); err == nil {
		t.Error("decodeLabels accepted a number")
	}
}

func TestRebind(t *testing.T) {
	d := Dialect{NumberedPlaceholders: true}
	if got := d.Rebind(`SELECT a FROM t WHERE x = ? AND y = '?' AND z IN (?, ?)`); got != `SELECT a FROM t WHERE x = $1 AND y = '?' AND z IN ($2, $3)` {
		t.Errorf("Rebind: %s", got)
	}
	d.NumberedPlaceholders = false
	if got := d.Rebind(`x = ?`); got != `x = ?` {
		t.Errorf("Rebind without numbering: %s", got)
	}
}

func TestMetadataMapsRoundTrip(t *testing.T) {
	cases := []struct {
		labels, annotations map[string]string
		column              string // "" when any encoding will do
	}{
		{nil, nil, `{}`},
		{map[string]string{"role": "web"}, nil, `{"role":"web"}`}, // unchanged from before annotations
		{nil, map[string]string{"a.io/x": `{"k":"v"}`}, ""},
		{map[string]string{"role": "web"}, map[string]string{"note": "line 1\nline \"2\"", "empty": ""}, ""},
	}
	for _, c := range cases {
		col, err := encodeMetadataMaps(c.labels, c.annotations)
		if err != nil {
			t.Fatal(err)
		}
		if c.column != "" && col != c.column {
			t.Errorf("column %s, want %s", col, c.column)
		}
		l, a, err := decodeMetadataMaps(col)
		if err != nil {
			t.Fatalf("decode %s: %v", col, err)
		}
		if len(l) != len(c.labels) || !reflect.DeepEqual(l, c.labels) && len(l) > 0 {
			t.Errorf("%s: labels %v, want %v", col, l, c.labels)
		}
		if len(a) != len(c.annotations) || !reflect.DeepEqual(a, c.annotations) && len(a) > 0 {
			t.Errorf("%s: annotations %v, want %v", col, a, c.annotations)
		}
		if _, ok := l[annotationsKey]; ok {
			t.Errorf("%s: the annotations key is visible as a label", col)
		}
	}
	// The encoder does not write into the caller's labels map.
	labels := map[string]string{"role": "web"}
	if _, err := encodeMetadataMaps(labels, map[string]string{"x": "y"}); err != nil || len(labels) != 1 {
		t.Errorf("encode changed the labels map: %v %v", labels, err)
	}
	if _, _, err := decodeMetadataMaps(`{"@annotations":"not json"}`); err == nil {
		t.Error("a corrupt annotations value decoded")
	}
}
