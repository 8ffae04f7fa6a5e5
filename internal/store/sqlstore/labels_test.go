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

func TestStringMapRoundTrip(t *testing.T) {
	cases := []struct {
		m      map[string]string
		column string // "" when any encoding will do
	}{
		{nil, `{}`},
		{map[string]string{}, `{}`},
		{map[string]string{"role": "web"}, `{"role":"web"}`}, // labels as schema 4 stored them
		{map[string]string{"a.io/x": `{"k":"v"}`}, ""},
		{map[string]string{"note": "line 1\nline \"2\"", "empty": ""}, ""},
	}
	for _, c := range cases {
		col, err := encodeStringMap(c.m)
		if err != nil {
			t.Fatal(err)
		}
		if c.column != "" && col != c.column {
			t.Errorf("column %s, want %s", col, c.column)
		}
		got, err := decodeStringMap(col)
		if err != nil {
			t.Fatalf("decode %s: %v", col, err)
		}
		if len(got) != len(c.m) || len(got) > 0 && !reflect.DeepEqual(got, c.m) {
			t.Errorf("%s: %v, want %v", col, got, c.m)
		}
	}
	// Labels a migration rewrote (PostgreSQL's jsonb text form) read back.
	if got, err := decodeStringMap(`{"role": "web"}`); err != nil || got["role"] != "web" || len(got) != 1 {
		t.Errorf("jsonb text form: %v, %v", got, err)
	}
	if _, err := decodeStringMap(`{"a":"b"`); err == nil {
		t.Error("a corrupt column decoded")
	}
}
