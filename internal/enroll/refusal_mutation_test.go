package enroll

import (
	"encoding/json"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
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

// lockedBuffer is a log destination safe for the server's goroutines.
type lockedBuffer = testkit.LogBuffer

// TestRefusalRecordKinds: a refusal names the machine when it knows it, else the
// verified token's id, else no one ("Enrollment -"); recording it logs "refused"
// (a warning for an alert) and no error.
func TestRefusalRecordKinds(t *testing.T) {
	var logs lockedBuffer
	e := newEnv(t)
	e.srv.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	e.createMachine("m1", "worker", victimMAC, resource.StateNew)
	e.srv.RecordRefusal(e.ctx, "enroll", &Refusal{Machine: "m1", TokenID: "tok-a", Reason: "machine known"}, "127.0.0.9")
	e.srv.RecordRefusal(e.ctx, "enroll", &Refusal{TokenID: "tok-b", Reason: "token known"}, "127.0.0.9")
	e.srv.RecordRefusal(e.ctx, "enroll", &Refusal{Reason: "no one known"}, "127.0.0.9")
	e.srv.RecordRefusal(e.ctx, "enroll", &Refusal{Alert: true, Reason: "spoofed"}, "127.0.0.9")
	want := map[string]string{"machine known": "Machine/m1", "token known": "JoinToken/tok-b", "no one known": "Enrollment/-"}
	entries := e.auditEntries("enroll-refused")
	if len(entries) != len(want) {
		t.Fatalf("%d enroll-refused entries, want %d", len(entries), len(want))
	}
	for _, a := range entries {
		for reason, obj := range want {
			if strings.Contains(a.Summary, reason) && a.Kind+"/"+a.Name != obj {
				t.Errorf("refusal %q recorded on %s/%s, want %s", reason, a.Kind, a.Name, obj)
			}
		}
	}
	if n := len(e.auditEntries("enroll-alert")); n != 1 {
		t.Errorf("%d enroll-alert entries, want 1", n)
	}
	out := logs.String()
	if strings.Contains(out, "cannot record a refusal") {
		t.Errorf("recording refusals logged an error:\n%s", out)
	}
	if c := strings.Count(out, "level=INFO msg=refused"); c != 3 {
		t.Errorf("%d info lines \"refused\", want 3:\n%s", c, out)
	}
	if c := strings.Count(out, "level=WARN msg=\"possible attack: refused\""); c != 1 {
		t.Errorf("%d alert warnings, want 1:\n%s", c, out)
	}
}
