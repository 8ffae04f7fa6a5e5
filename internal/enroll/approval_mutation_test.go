package enroll

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Tests for the bounds on what an unauthenticated enrollment request stores for
// the operator (facts, hostname): mutants of the gremlins run of 2026-12-07 that
// no test caught (TESTING.md, internal/enroll).

// TestBoundFactsLimits: every bound is inclusive at its limit and refuses one
// past it, and what is left out is flagged.
func TestBoundFactsLimits(t *testing.T) {
	key64, key65 := strings.Repeat("k", maxFactKeyBytes), strings.Repeat("k", maxFactKeyBytes+1)
	got := boundFacts(map[string]any{key64: "a", key65: "b", "ctl\x1b[2J": "c", "ok": "d\x07e"})
	if got[key64] != "a" || got[key65] != nil || got["ctl\x1b[2J"] != nil || got["ctl?[2J"] != nil || got["ok"] != "d?e" || got["_truncated"] != true {
		t.Errorf("keys: %v", got)
	}
	if got := boundFacts(map[string]any{"a": "b"}); got["_truncated"] != nil {
		t.Errorf("nothing left out, yet flagged: %v", got)
	}

	// A value of exactly maxFactValueBytes of JSON is kept, one byte more is not.
	list := func(lastLen int) []any {
		var l []any
		for range 7 {
			l = append(l, strings.Repeat("x", 256))
		}
		return append(l, strings.Repeat("y", lastLen))
	}
	size := func(v any) int { b, _ := json.Marshal(boundFactValue(v, 0)); return len(b) }
	base := size(list(0))
	exact := list(maxFactValueBytes - base)
	if size(exact) != maxFactValueBytes {
		t.Fatalf("test setup: %d bytes", size(exact))
	}
	if got := boundFacts(map[string]any{"v": exact}); got["v"] == nil {
		t.Errorf("a value of exactly %d bytes was left out", maxFactValueBytes)
	}
	if got := boundFacts(map[string]any{"v": list(maxFactValueBytes - base + 1)}); got["v"] != nil || got["_truncated"] != true {
		t.Errorf("a value of %d bytes was kept", maxFactValueBytes+1)
	}

	// The total: 77 entries of 210 bytes (key 4, value 202, 4 of overhead), then
	// "z" (sorted last) filling the budget exactly, or one byte past it.
	total := func(zLen int) map[string]any {
		f := map[string]any{}
		for i := range 77 {
			f[fmt.Sprintf("f%03d", i)] = strings.Repeat("v", 200)
		}
		f["z"] = strings.Repeat("z", zLen)
		return f
	}
	budget := maxStoredFactsBytes - 64 - 77*210 // z costs 1 + (len+2) + 4
	if got := boundFacts(total(budget - 7)); got["z"] == nil || got["_truncated"] != nil {
		t.Errorf("facts filling the budget exactly lost z: truncated %v", got["_truncated"])
	}
	if got := boundFacts(total(budget - 6)); got["z"] != nil || got["_truncated"] != true || got["f076"] == nil {
		t.Errorf("facts one byte past the budget kept z (or lost an earlier key)")
	}

	// Depth and width of nested values.
	deep := map[string]any{"l1": map[string]any{"l2": map[string]any{"l3": map[string]any{"l4": map[string]any{"l5": "x"}}}}}
	b, _ := json.Marshal(boundFactValue(deep, 0))
	if want := `{"l1":{"l2":{"l3":{"l4":"..."}}}}`; string(b) != want {
		t.Errorf("nested maps: %s, want %s", b, want)
	}
	deepList := []any{[]any{[]any{[]any{[]any{"x"}}}}}
	b, _ = json.Marshal(boundFactValue(deepList, 0))
	if want := `[[[["..."]]]]`; string(b) != want {
		t.Errorf("nested lists: %s, want %s", b, want)
	}
	wide, long := map[string]any{}, []any{}
	for i := range maxFactListItems + 1 {
		wide[fmt.Sprintf("k%02d", i)] = i
		long = append(long, i)
	}
	wide[key65] = "dropped"
	if m := boundFactValue(wide, 0).(map[string]any); len(m) != maxFactListItems || m[key65] != nil {
		t.Errorf("a map of %d keys kept %d", len(wide), len(m))
	}
	wide = map[string]any{key64: "kept"}
	if m := boundFactValue(wide, 0).(map[string]any); m[key64] != "kept" {
		t.Errorf("a nested key of %d bytes was dropped", maxFactKeyBytes)
	}
	if l := boundFactValue(long, 0).([]any); len(l) != maxFactListItems {
		t.Errorf("a list of %d kept %d", len(long), len(l))
	}
}

// TestReportedHostname: a reported hostname is kept lowercased and trimmed when it
// is valid and at most 253 characters.
func TestReportedHostname(t *testing.T) {
	label := strings.Repeat("a", 63)
	h253 := label + "." + label + "." + label + "." + strings.Repeat("b", 61)
	for in, want := range map[string]string{
		" Web-1.Example.NET ": "web-1.example.net",
		h253:                  h253,
		h253 + "c":            "",
		"bad_name!":           "",
	} {
		if got := reportedHostname(map[string]any{"hostname": in}); got != want {
			t.Errorf("reportedHostname(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPendingAnswerRetry: the pending answer tells the agent to poll every
// approvalRetryAfter, in seconds.
func TestPendingAnswerRetry(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	p := pendingAnswer("enr-1", exp)
	if p.RetryAfterSeconds != 5 || p.ID != "enr-1" || !p.ExpiresAt.Equal(exp) {
		t.Errorf("pending answer %+v", p)
	}
}

// TestApprovalWithoutMachineNamesANewOne: a tokenless request whose MACs belong
// to no machine, approved without --machine, becomes a new machine named after
// its reported hostname; the next such request with the same hostname gets the
// name from its MAC.
func TestApprovalWithoutMachineNamesANewOne(t *testing.T) {
	e := newEnv(t, withApproval(100, 5))
	for _, c := range []struct{ mac, want string }{
		{"52:54:00:ab:00:01", "rack7-node3"},
		{"52:54:00:ab:00:02", macName([]string{"52:54:00:ab:00:02"})},
	} {
		key := newKey(t)
		code, p, msg := e.requestEnrollment(key, "", facts(c.mac, "hostname", "rack7-node3"))
		if code != http.StatusAccepted || p == nil {
			t.Fatalf("tokenless request: %d %s", code, msg)
		}
		// A refusal of a poll names the request once.
		conn, _ := e.pollConn()
		if code, body := e.pollWith(conn, p.ID, csrPEM(t, nil, key)); code != http.StatusBadRequest ||
			!strings.HasPrefix(errorText(body), "enrollment request "+p.ID+": poll: ") {
			t.Fatalf("poll with a CSR without channel binding: %d %s", code, body)
		}
		conn.Close()
		if _, err := e.srv.ApproveEnrollment(e.ctx, "token:alice", p.ID, ""); err != nil {
			t.Fatalf("approval without --machine of a request no machine owns: %v", err)
		}
		code, body := e.poll(key, p.ID)
		if code != http.StatusOK || !strings.Contains(string(body), `"machine":"`+c.want+`"`) {
			t.Fatalf("poll after approval: %d %s, want machine %s", code, body, c.want)
		}
		// Collected once: a second poll gets no second certificate.
		if code, body = e.poll(key, p.ID); code != http.StatusConflict || !strings.Contains(string(body), "collected already") ||
			strings.Count(string(body), "enrollment request "+p.ID) != 1 {
			t.Fatalf("second poll: %d %s, want 409 collected already", code, body)
		}
		if !e.hasEvent(c.want, "EnrollmentApproved", p.ID) {
			t.Errorf("no EnrollmentApproved event on the new machine %s", c.want)
		}
	}
}

// errorText is the "error" field of an error answer.
func errorText(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error
}

// TestBootTokenIDLength: a per-boot token's id is "boot-" and the machine's name
// up to 253 characters, a hash of the name past that.
func TestBootTokenIDLength(t *testing.T) {
	name248, name249 := strings.Repeat("a", 248), strings.Repeat("a", 249)
	if got := bootTokenID(name248); got != "boot-"+name248 {
		t.Errorf("bootTokenID of a 248-character name = %q, want it kept (253 characters)", got)
	}
	if got := bootTokenID(name249); len(got) != len("boot-")+32 || got == bootTokenID(strings.Repeat("b", 249)) {
		t.Errorf("bootTokenID of a 249-character name = %q, want boot- and 32 hex digits of its hash", got)
	}
}

// TestBootAlertWindow: one alert per source and reason per bootAlertEvery, the
// next one counting the requests suppressed since; the table is bounded and
// starts over when full of recent entries.
func TestBootAlertWindow(t *testing.T) {
	var b bootAlerts
	t0 := time.Now()
	if w, n := b.note("k", t0); !w || n != 1 {
		t.Fatalf("first request: %t %d", w, n)
	}
	for i := range 3 {
		if w, _ := b.note("k", t0.Add(time.Duration(i+1)*time.Second)); w {
			t.Fatalf("request %d within the window was written", i+2)
		}
	}
	if w, n := b.note("k", t0.Add(bootAlertEvery)); !w || n != 4 {
		t.Fatalf("request at exactly bootAlertEvery: %t %d, want written counting 4", w, n)
	}
	var full bootAlerts
	for i := range 4096 {
		full.note(fmt.Sprintf("src-%d", i), t0)
	}
	if w, n := full.note("src-0", t0.Add(time.Second)); !w || n != 1 {
		t.Fatalf("a full table of recent entries: %t %d, want it started over (written, 1)", w, n)
	}
	if len(full.m) != 1 {
		t.Fatalf("table after starting over holds %d", len(full.m))
	}
}
