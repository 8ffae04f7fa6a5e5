package secrets

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestDeleteRefusedWhileBMCUsesIt: a Secret a machine's BMC takes its
// credentials from cannot be deleted (the refusal names the machine and the
// field); a machine whose BMC uses another secret does not hold this one.
func TestDeleteRefusedWhileBMCUsesIt(t *testing.T) {
	e := newFleet(t)
	ctx := context.Background()
	e.set("bmc-creds", "admin:hunter2")
	e.set("other-creds", "admin:other")
	e.apply(`
kind: Machine
metadata: {name: bmc-1}
spec: {profile: web, bmc: {driver: redfish, address: "https://127.0.0.1:1", credentialsSecret: bmc-creds}}
`)
	var ie *InputError
	err := e.svc.Delete(ctx, admin, "bmc-creds")
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), `machine "bmc-1" still refers to it (spec.bmc.credentialsSecret)`) {
		t.Errorf("delete the BMC's credentials: %v, want refused naming machine bmc-1", err)
	}
	if err := e.svc.Delete(ctx, admin, "other-creds"); err != nil {
		t.Errorf("delete a secret no one uses: %v", err)
	}
}

// TestLower: kind names in messages are lower-cased, A to Z only.
func TestLower(t *testing.T) {
	if got := lower("@AZaz[Machine"); got != "@azaz[machine" {
		t.Errorf("lower = %q", got)
	}
}
