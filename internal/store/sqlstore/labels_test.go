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
