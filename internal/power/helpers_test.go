package power

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
)

const (
	testUser = "kiln-admin"
	// A distinctive password, so that the tests can assert it never appears in
	// an error, a log line, a job or an event.
	testPassword = "Zq8-s3cr3t-Pa55w0rd"
)

// staticCreds resolves every secret to one user and password.
type staticCreds struct{ user, password string }

func (c staticCreds) BMCCredentials(_ context.Context, name string) (string, string, error) {
	return c.user, c.password, nil
}

// logBuffer is a slog destination the tests search for secrets.
type logBuffer struct{ testkit.LogBuffer }

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fastOptions are driver options for tests: short polls and timeouts.
func fastOptions(log *logBuffer) Options {
	return Options{
		RequestTimeout: 3 * time.Second,
		PollInterval:   5 * time.Millisecond,
		StateTimeout:   2 * time.Second,
		Logger:         log.logger(),
	}
}

// assertNoSecret fails when the test password appears in any of texts.
func assertNoSecret(t *testing.T, where string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, testPassword) {
			t.Fatalf("%s contains the BMC password: %q", where, s)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// requireTool ends a test by the kit's rule (skip outside CI, fail in CI) when a
// tool is missing.
func requireTool(t *testing.T, names ...string) {
	t.Helper()
	packages := map[string]string{"ipmi_sim": "openipmi", "ipmitool": "ipmitool", "qemu-system-x86_64": "qemu-system-x86"}
	for _, n := range names {
		testkit.NeedTool(t, n, packages[n])
	}
}

func redfishBMC(sim *bmcSim) resource.BMC {
	return resource.BMC{Driver: "redfish", Address: sim.URL(), CredentialsSecret: "bmc-creds", CAFingerprint: sim.Fingerprint()}
}
