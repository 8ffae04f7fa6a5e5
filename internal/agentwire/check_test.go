package agentwire

import (
	"strings"
	"testing"
)

func TestCheckActions(t *testing.T) {
	parts := func(p ...map[string]any) map[string]any {
		l := make([]any, len(p))
		for i, x := range p {
			l[i] = x
		}
		return map[string]any{"disk": "/dev/vda", "partitions": l}
	}
	cases := []struct {
		name string
		a    Action
		want string
	}{
		{"ok", Action{Name: "p", Type: "partition", Args: parts(map[string]any{"label": "root", "size": "rest"})}, ""},
		{"templated is left to render", Action{Name: "p", Type: "partition", Args: map[string]any{"disk": "/dev/vda", "partitions": "{{ .X }}"}}, ""},
		{"two rests", Action{Name: "p", Type: "partition", Args: parts(map[string]any{"label": "a", "size": "rest"}, map[string]any{"label": "b", "size": "rest"})}, "only one partition can take the rest"},
		{"duplicate label", Action{Name: "p", Type: "partition", Args: parts(map[string]any{"label": "a", "size": "1G"}, map[string]any{"label": "a", "size": "1G"})}, `"a" is also partitions[0]'s`},
		{"bad size", Action{Name: "p", Type: "partition", Args: parts(map[string]any{"label": "a", "size": "huge"})}, "partitions[0].size"},
		{"missing disk", Action{Name: "i", Type: "image2disk", Args: map[string]any{"image": "x"}}, "spec.actions[0] (i).args.disk: required by image2disk"},
		{"missing path", Action{Name: "w", Type: "write-file", Args: map[string]any{"content": "x"}}, "args.path: required by write-file"},
		{"disk selector", Action{Name: "i", Type: "image2disk", Args: map[string]any{"image": "x", "disk": map[string]any{"type": "ssd", "minSize": "200G"}}}, ""},
		{"disk selector, unknown key", Action{Name: "i", Type: "image2disk", Args: map[string]any{"image": "x", "disk": map[string]any{"size": "200G"}}}, `spec.actions[0] (i).args.disk: a device path or a selector`},
		{"disk selector, bad type", Action{Name: "i", Type: "image2disk", Args: map[string]any{"image": "x", "disk": map[string]any{"type": "floppy"}}}, `args.disk.type: "floppy" is not ssd, hdd or nvme`},
		{"disk selector, bad size", Action{Name: "p", Type: "partition", Args: map[string]any{"disk": map[string]any{"minSize": "lots"}, "partitions": []any{}}}, `args.disk.minSize: "lots" is not a size`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckActions([]Action{c.a})
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}
