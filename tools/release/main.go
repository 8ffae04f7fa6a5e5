// Command release builds Kiln's release artefacts into a directory (dist/ by
// default): static kiln binaries for linux/amd64 and linux/arm64, an SPDX SBOM and
// SHA256SUMS. Run it from the repository root; `make release` does.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/kilnhq/kiln/internal/release"
)

func main() {
	dir := flag.String("C", ".", "repository root")
	out := flag.String("o", "dist", "directory the artefacts are written to")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	src, err := release.Describe(ctx, *dir)
	if err == nil {
		var a release.Artefacts
		a, err = release.Release(ctx, *dir, src, *out)
		if err == nil {
			fmt.Printf("kiln %s (commit %s) released into %s:\n", src.Version, src.Commit, *out)
			for _, f := range append(a.Binaries, a.SBOM, a.Sums) {
				fmt.Println("  " + f)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}
