// Command kiln is Kiln's one binary: the server (`kiln serve`) and its CLI.
package main

import (
	"os"

	"github.com/kilnhq/kiln/internal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
