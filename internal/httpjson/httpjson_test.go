package httpjson

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
)

func TestError(t *testing.T) {
	w := httptest.NewRecorder()
	Error(w, 403, "not yours")
	var got ErrorResponse
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.Error != "not yours" || got.Code != 403 || w.Code != 403 {
		t.Fatalf("%d %q: %+v %v", w.Code, w.Body, got, err)
	}
	for k, v := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if w.Header().Get(k) != v {
			t.Errorf("%s: %q, want %q", k, w.Header().Get(k), v)
		}
	}
}

// A list response with no items is [] in JSON, never null; items are kept as given.
func TestList(t *testing.T) {
	for _, tc := range []struct {
		items []string
		want  string
	}{{nil, "[]"}, {[]string{}, "[]"}, {[]string{"a", "b"}, `["a","b"]`}} {
		b, err := json.Marshal(List(tc.items))
		if err != nil || string(b) != tc.want {
			t.Errorf("List(%#v) marshals as %s (%v), want %s", tc.items, b, err, tc.want)
		}
	}
}
