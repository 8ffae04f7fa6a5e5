package cli

import (
	"bytes"
	"runtime"
	"testing"
)

// TestVersionOutput checks the lines scripts parse: "kiln <version>" first, then
// "key: value" lines for the commit, the Go version and the platform.
func TestVersionOutput(t *testing.T) {
	oldVersion, oldCommit := Version, Commit
	t.Cleanup(func() { Version, Commit = oldVersion, oldCommit })
	Version, Commit = "v1.2.3", "0123456789abcdef0123456789abcdef01234567"

	var out, errOut bytes.Buffer
	root := NewRoot(&out, &errOut)
	root.SetArgs([]string{"version", "--client"})
	if err := root.Execute(); err != nil {
		t.Fatalf("kiln version: %v (%s)", err, errOut.String())
	}
	want := "kiln v1.2.3\n" +
		"commit: 0123456789abcdef0123456789abcdef01234567\n" +
		"go: " + runtime.Version() + "\n" +
		"platform: " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if out.String() != want {
		t.Errorf("kiln version printed\n%s\nwant\n%s", out.String(), want)
	}
}
