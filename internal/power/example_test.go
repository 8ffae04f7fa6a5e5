package power_test

import (
	"context"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/power"
	"github.com/kilnhq/kiln/internal/resource"
)

// secretCreds stands for the server's resolver of BMC credential Secrets.
type secretCreds struct{}

func (secretCreds) BMCCredentials(ctx context.Context, secret string) (string, string, error) {
	return "", "", fmt.Errorf("secret %q: not in this example", secret)
}

// How the server wires the package: a driver factory over New, a JobStore and a
// Recorder backed by the store, one Runner for the process.
func ExampleNewRunner() {
	opts := power.Options{StateTimeout: 5 * time.Minute}
	r := power.NewRunner(power.RunnerConfig{
		NewDriver: func(ctx context.Context, machine string, b resource.BMC) (power.Driver, error) {
			return power.New(ctx, b, secretCreds{}, opts)
		},
		Jobs:        &power.MemoryJobStore{}, // the server's store
		Parallelism: 16,
	})
	defer r.Shutdown(context.Background())

	// kiln machine reprovision web-1: start the workflow, then
	job, err := r.Submit(context.Background(), power.Request{
		Target: power.Target{Machine: "web-1", BMC: resource.BMC{
			Driver: "redfish", Address: "https://10.0.9.11", CredentialsSecret: "bmc-web",
			CAFingerprint: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},
		Op:    power.OpReprovision,
		Actor: "tok-alice",
	})
	_, _ = job, err
}
