package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/kilnhq/kiln/internal/sdnotify"
)

// DefaultConfigFile is the config file `kiln serve` reads when no --config (nor
// KILN_CONFIG) is given and the file exists: the Debian package's conffile.
const DefaultConfigFile = "/etc/kiln/kiln.yaml"

// serveConfigFile is the config file serve reads: the one given, else the
// default when it exists, else none. A default that exists but cannot be read is
// an error, not silently skipped: the operator wrote it to be used.
func serveConfigFile(given, defaultPath string) (string, error) {
	if given != "" || defaultPath == "" {
		return given, nil
	}
	_, err := os.Stat(defaultPath)
	switch {
	case err == nil:
		return defaultPath, nil
	case errors.Is(err, fs.ErrNotExist):
		return "", nil
	}
	return "", fmt.Errorf("default config file: %w", err)
}

// systemdNotifier is how serve talks to systemd (Type=notify), from the
// variables systemd sets; without NOTIFY_SOCKET it sends nothing.
func systemdNotifier() *sdnotify.Notifier {
	return sdnotify.New(os.Getenv("NOTIFY_SOCKET"), os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid())
}
