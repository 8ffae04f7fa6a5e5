package enroll

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/resource"
)

// TestRefusalEventTypes: a refused enrollment of a known machine is an
// EnrollRefused event on its timeline, a refused agent call (renew, the agent
// API) an AgentRefused one, and each is audited under its own action.
func TestRefusalEventTypes(t *testing.T) {
	e := newEnv(t)
	e.createMachine("m1", "worker", victimMAC, resource.StateNew)
	e.srv.RecordRefusal(e.ctx, "enroll", &Refusal{Machine: "m1", Reason: "enrollment refused here"}, "127.0.0.9")
	e.srv.RecordRefusal(e.ctx, "renew", &Refusal{Machine: "m1", Reason: "renewal refused here"}, "127.0.0.9")
	want := map[string]string{"EnrollRefused": "enrollment refused here", "AgentRefused": "renewal refused here"}
	evs := e.events("m1")
	if len(evs) != len(want) {
		t.Errorf("%d events, want %d: %+v", len(evs), len(want), evs)
	}
	for _, ev := range evs {
		if w, ok := want[ev.Type]; !ok || !strings.Contains(ev.Message, w) {
			t.Errorf("event %s %q, want %v", ev.Type, ev.Message, want)
		}
	}
	if n := len(e.auditEntries("enroll-refused")); n != 1 {
		t.Errorf("%d enroll-refused audit entries, want 1", n)
	}
	if n := len(e.auditEntries("renew-refused")); n != 1 {
		t.Errorf("%d renew-refused audit entries, want 1", n)
	}
}

// TestPolicyFactsConversion: what a policy sees of reported facts: integral JSON
// numbers as int64 (so facts.cpus == 8), others as float64, a number past float64
// as its text, lists element by element; float64 values are integers below 2^53
// only, where every integer is exact.
func TestPolicyFactsConversion(t *testing.T) {
	var raw map[string]any
	dec := json.NewDecoder(strings.NewReader(`{"cpus": 8, "ratio": 2.5, "huge": 1e400, "list": [1, 2.5, "a"]}`))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	got, err := policyFacts(raw, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"cpus": int64(8), "ratio": 2.5, "huge": "1e400", "list": []any{int64(1), 2.5, "a"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("policyFacts = %#v, want %#v", got, want)
	}

	for _, tc := range []struct {
		in   float64
		want any
	}{
		{8, int64(8)},
		{1<<53 - 1, int64(1<<53 - 1)},
		{1 << 53, float64(1 << 53)},
		{-(1 << 53), float64(-(1 << 53))},
		{0.5, 0.5},
		{math.Inf(1), math.Inf(1)},
	} {
		got, err := policyFacts(tc.in, 0)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("policyFacts(%v) = %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
	}

	// A list element nested too deep refuses the whole facts.
	deep := any(map[string]any{})
	for range maxFactsDepth + 1 {
		deep = []any{deep}
	}
	if _, err := policyFacts(map[string]any{"l": deep}, 0); err == nil {
		t.Error("a list nested past the limit accepted")
	}
}
