package role

import "testing"

func TestAllows(t *testing.T) {
	tests := []struct {
		have, need string
		want       bool
	}{
		{Admin, Admin, true},
		{Admin, Operator, true},
		{Admin, Viewer, true},
		{Operator, Admin, false},
		{Operator, Operator, true},
		{Operator, Viewer, true},
		{Viewer, Admin, false},
		{Viewer, Operator, false},
		{Viewer, Viewer, true},
		{"", Viewer, false},
		{"root", Viewer, false},
		{"ADMIN", Viewer, false}, // role names are exact
	}
	for _, tc := range tests {
		if got := Allows(tc.have, tc.need); got != tc.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tc.have, tc.need, got, tc.want)
		}
	}
}
