// Command ociimage writes Kiln's container image as an OCI image layout directory,
// without a container daemon (internal/ociimage). `make image` runs it; push the
// result with `skopeo copy oci:DIR:TAG docker://REGISTRY/kiln:TAG`.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/kilnhq/kiln/internal/ociimage"
)

func main() {
	var opts ociimage.Options
	out := flag.String("o", "dist/oci", "directory the OCI layout is written to (must not exist)")
	created := flag.String("created", "", "timestamp of every file and of the image: RFC 3339 or unix seconds; default $SOURCE_DATE_EPOCH, else 1970-01-01")
	flag.StringVar(&opts.Binary, "binary", "bin/kiln", "the static kiln binary (CGO_ENABLED=0)")
	flag.StringVar(&opts.CABundle, "ca-bundle", "", "PEM bundle installed as /etc/ssl/certs/ca-certificates.crt (https artifact sources)")
	flag.StringVar(&opts.Version, "version", "dev", "org.opencontainers.image.version")
	flag.StringVar(&opts.Revision, "revision", "", "org.opencontainers.image.revision (the commit)")
	flag.StringVar(&opts.Arch, "arch", runtime.GOARCH, "the binary's architecture")
	flag.StringVar(&opts.Tag, "tag", "", "the image's tag in the layout (default: -version)")
	flag.Parse()
	if opts.Tag == "" {
		opts.Tag = opts.Version
	}
	t, err := parseCreated(*created)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ociimage: -created:", err)
		os.Exit(2)
	}
	opts.Created = t
	if _, err := os.Stat(*out); err == nil {
		fmt.Fprintf(os.Stderr, "ociimage: %s exists; remove it first (a layout is written whole)\n", *out)
		os.Exit(1)
	}
	desc, err := ociimage.Build(*out, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
	fmt.Printf("oci:%s:%s %s\n", *out, opts.Tag, desc.Digest)
}

func parseCreated(s string) (time.Time, error) {
	if s == "" {
		s = os.Getenv("SOURCE_DATE_EPOCH")
	}
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor unix seconds", s)
	}
	return t, nil
}
