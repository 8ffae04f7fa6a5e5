package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/resource"
)

// TestGetTableEscapesControlCharacters: a value stored before validation (here a
// machine's state, which the agent reports) cannot add a line to `kiln get` or send
// an escape sequence to the terminal.
func TestGetTableEscapesControlCharacters(t *testing.T) {
	k, ok := resource.LookupKind("machines")
	if !ok {
		t.Fatal("no Machine kind")
	}
	m := &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: "web-1"},
		Spec:   json.RawMessage(`{"profile":"p"}`),
		Status: json.RawMessage(`{"state":"new\nweb-9   p   -   -   provisioned\u001b[2J"}`)}
	var out bytes.Buffer
	if err := printObjects(&out, k, []*resource.Object{m}, printOptions{output: "table"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 2 || strings.Contains(out.String(), "\x1b") || !strings.Contains(lines[1], `new\nweb-9`) || !strings.Contains(lines[1], `\x1b[2J`) {
		t.Fatalf("kiln get table:\n%q", out.String())
	}
}
