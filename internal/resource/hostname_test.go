package resource

import (
	"strings"
	"testing"
)

func TestValidHostname(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"single label", "web-1", true},
		{"fqdn", "web-1.rack3.example.com", true},
		{"upper case", "Web-1.Example.COM", true},
		{"digits only", "123", true},
		{"label of 63", label63 + ".example", true},
		{"253 characters", strings.Repeat(label63+".", 3) + strings.Repeat("a", 61), true},
		{"empty", "", false},
		{"label of 64", label63 + "a.example", false},
		{"254 characters", strings.Repeat(label63+".", 3) + strings.Repeat("a", 62), false},
		{"leading hyphen", "-web.example", false},
		{"trailing hyphen", "web-.example", false},
		{"empty label", "web..example", false},
		{"trailing dot", "web.example.", false},
		{"underscore", "web_1", false},
		{"space", "web 1", false},
		{"non-ASCII", "wéb", false},
		{"wildcard", "*.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidHostname(tt.in); got != tt.want {
				t.Errorf("ValidHostname(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
