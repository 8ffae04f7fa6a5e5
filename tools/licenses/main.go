// Command licenses checks the licences of the modules linked into kiln and writes
// or checks THIRD_PARTY_NOTICES (`make licenses` writes it; the thirdparty package's
// test fails when the committed file is stale). Run it from the repository root.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kilnhq/kiln/internal/release"
	"github.com/kilnhq/kiln/internal/thirdparty"
)

func main() {
	check := flag.Bool("check", false, "fail when THIRD_PARTY_NOTICES differs from what would be written, instead of writing it")
	dir := flag.String("C", ".", "repository root")
	flag.Parse()
	if err := run(context.Background(), *dir, *check); err != nil {
		fmt.Fprintln(os.Stderr, "licenses:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string, check bool) error {
	want, err := thirdparty.Render(ctx, dir, release.Platforms())
	if err != nil {
		return err
	}
	path := filepath.Join(dir, thirdparty.NoticesFile)
	if check {
		have, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if !bytes.Equal(have, want) {
			return fmt.Errorf("%s is stale: run make licenses and commit it", path)
		}
		return nil
	}
	if err := os.WriteFile(path, want, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
