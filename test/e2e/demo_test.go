package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/kilnhq/kiln/internal/testkit"
)

// demoShow writes what an operator would look at after a boot to the file KILN_DEMO
// names, when the test runs for `make demo`: the machine as Kiln sees it, with its
// timeline, its lease and the audit chain.
func (k *kilnServer) demoShow(machine string) {
	path := os.Getenv("KILN_DEMO")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		k.t.Fatal(err)
	}
	defer f.Close()
	for _, args := range [][]string{
		{"get", "machines"},
		{"describe", "machine", machine, "--events", "100"},
		{"get", "leases"},
		{"audit", "verify"},
	} {
		cmd := k.l.nsCommand(context.Background(), append([]string{testkit.KilnBinary(k.t), "--data-dir", k.dataDir}, args...)...)
		out, err := cmd.CombinedOutput()
		fmt.Fprintf(f, "\n$ kiln %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			k.t.Errorf("kiln %v: %v", args, err)
		}
	}
}
