package release

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
)

// TestDescribe runs Describe on a scratch repository through its history: no tag
// yet, a tag, a commit after the tag, uncommitted changes.
func TestDescribe(t *testing.T) {
	testkit.NeedTool(t, "git", "git")
	ctx := context.Background()
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=Kiln Test", "-c", "user.email=test@kiln.invalid", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	describe := func() Source {
		t.Helper()
		src, err := Describe(ctx, dir)
		if err != nil {
			t.Fatalf("Describe: %v", err)
		}
		if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(src.Commit) || src.Time.IsZero() {
			t.Fatalf("Describe = %+v: want a full commit and its time", src)
		}
		return src
	}
	git("init", "-q")
	write("1")
	git("add", "f")
	git("commit", "-q", "-m", "one")
	first := describe()
	if want := "v0.0.0-" + first.Commit[:12]; first.Version != want {
		t.Errorf("untagged: version %q, want %q", first.Version, want)
	}
	git("tag", "-a", "-m", "v1.2.0", "v1.2.0")
	git("tag", "not-a-version") // only v-tags count
	if v := describe().Version; v != "v1.2.0" {
		t.Errorf("tagged: version %q, want v1.2.0", v)
	}
	write("2")
	git("commit", "-q", "-am", "two")
	after := describe()
	if want := "v1.2.0-1-g" + after.Commit[:12]; after.Version != want {
		t.Errorf("after the tag: version %q, want %q", after.Version, want)
	}
	write("3")
	if want := "v1.2.0-1-g" + after.Commit[:12] + "-dirty"; describe().Version != want {
		t.Errorf("uncommitted change: version %q, want %q", describe().Version, want)
	}
}
