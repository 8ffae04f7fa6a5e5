package enroll

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// TestScopedTokenCannotTakeOverAnotherMachine is issue 13's second hole, as an
// attacker does it: a token made for one MAC (--profile pub --mac 02:00:00:00:00:99),
// presented with facts that report that MAC and another machine's MAC. Whatever the
// other machine's profile and state, the enrollment is refused, nothing is issued to
// it and the token is not consumed.
func TestScopedTokenCannotTakeOverAnotherMachine(t *testing.T) {
	const scoped, victimMAC = "02:00:00:00:00:99", "02:00:00:00:00:42"
	future := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	states := map[string]string{
		"new":          `{"state":"new"}`,
		"enrolled":     `{"state":"new","certFingerprint":"aaaa","certSerial":"01","certNotAfter":"` + future + `"}`,
		"provisioning": `{"state":"provisioning"}`,
		"provisioned":  `{"state":"provisioned","certFingerprint":"bbbb","certSerial":"02","certNotAfter":"` + future + `"}`,
	}
	for _, profile := range []string{"pub", "other", ""} {
		for _, state := range []string{"new", "enrolled", "provisioning", "provisioned"} {
			t.Run(fmt.Sprintf("profile=%s/state=%s", cmpOrNone(profile), state), func(t *testing.T) {
				e := newEnv(t)
				e.createProfiles("pub", "other")
				spec, _ := json.Marshal(resource.MachineSpec{Profile: profile, Interfaces: []resource.Interface{{MAC: victimMAC}}})
				if err := e.st.Update(e.ctx, func(tx store.Tx) error {
					return tx.Create(e.ctx, &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: "victim"}, Spec: spec,
						Status: json.RawMessage(states[state])})
				}); err != nil {
					t.Fatal(err)
				}
				before := e.machine("victim").Status
				tok := e.token(TokenRequest{Profile: "pub", MACs: []string{scoped}})
				f := map[string]any{"interfaces": []any{
					map[string]any{"name": "eth0", "mac": scoped},
					map[string]any{"name": "eth1", "mac": victimMAC},
				}}
				code, resp, msg := e.enroll(e.newAgent(), tok, f)
				if code != http.StatusForbidden {
					got := ""
					if resp != nil {
						got = resp.Machine
					}
					t.Fatalf("enrollment with a token for %s and facts carrying victim's MAC: %d (machine %q) %s, want 403", scoped, code, got, msg)
				}
				mustContain(t, "refusal", msg, "victim")
				if got := e.machine("victim").Status; string(got) != string(before) {
					t.Fatalf("victim's status changed: %s -> %s", before, got)
				}
				if n := e.tokenUses(tokenID(t, tok)); n != 0 {
					t.Fatalf("refused enrollment consumed the token: %d uses", n)
				}
				if n := e.count("Machine"); n != 1 {
					t.Fatalf("%d machines after a refused enrollment, want 1", n)
				}
			})
		}
	}
}

// TestScopedTokenEnrollsItsOwnMachine: the fix keeps the legitimate use: a token for
// a MAC enrolls the machine that owns it (with the token's profile), or creates one.
func TestScopedTokenEnrollsItsOwnMachine(t *testing.T) {
	e := newEnv(t)
	e.createProfiles("pub", "other")
	e.createMachine("own", "pub", "02:00:00:00:00:98", resource.StateNew)
	tok := e.token(TokenRequest{Profile: "pub", MACs: []string{"02:00:00:00:00:98"}})
	if code, resp, msg := e.enroll(e.newAgent(), tok, facts("02:00:00:00:00:98")); code != http.StatusOK || resp.Machine != "own" {
		t.Fatalf("own machine: %d %s", code, msg)
	}
	// A machine of another profile is not enrolled by a token for its MAC.
	e.createMachine("else", "other", "02:00:00:00:00:97", resource.StateNew)
	tok = e.token(TokenRequest{Profile: "pub", MACs: []string{"02:00:00:00:00:97"}})
	if code, _, msg := e.enroll(e.newAgent(), tok, facts("02:00:00:00:00:97")); code != http.StatusForbidden {
		t.Fatalf("machine of another profile: %d %s, want 403", code, msg)
	}
}

// createProfiles adds agent-booting profiles.
func (e *env) createProfiles(names ...string) {
	e.t.Helper()
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		for _, n := range names {
			if err := tx.Create(e.ctx, &resource.Object{Kind: "Profile", Metadata: resource.Metadata{Name: n}, Spec: json.RawMessage(`{"boot":{"agent":true}}`)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func cmpOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// startWorkflow does what `kiln machine reprovision` does to the store, for this
// package's tests: a running workflow created now, and the machine provisioning.
func (e *env) startWorkflow(machine string) string {
	e.t.Helper()
	name := machine + "-" + e.clock.Now().Format("20060102-150405-000")
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		spec, _ := json.Marshal(resource.WorkflowSpec{Machine: machine, Template: "t"})
		status, _ := json.Marshal(map[string]any{"state": "pending", "createdAt": e.clock.Now().UTC(), "actions": []any{}})
		if err := tx.Create(e.ctx, &resource.Object{Kind: "Workflow", Metadata: resource.Metadata{Name: name, Labels: map[string]string{"kiln.dev/machine": machine}},
			Spec: spec, Status: status}); err != nil {
			return err
		}
		m, err := tx.Get(e.ctx, "Machine", machine)
		if err != nil {
			return err
		}
		if m.Status, err = mergeStatus(m.Status, map[string]any{"state": resource.StateProvisioning}); err != nil {
			return err
		}
		return tx.Update(e.ctx, m)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return name
}
