package secrets

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestHandleRedeemRechecksReleaseRules: a handle issued while the rules allowed the
// machine is refused once they no longer do (an operator moved the machine out of
// the label the Secret is released to): no value, the handle used up so that a
// second try cannot win after the labels come back, and a deny in the audit.
func TestHandleRedeemRechecksReleaseRules(t *testing.T) {
	e := newFleet(t)
	path := handleURL(t, e) // api-token is released to labels {role: web}
	e.setLabels("web-1", map[string]string{"role": "db"})

	code, body := e.request("GET", path, nil, nil)
	if code != http.StatusForbidden || strings.Contains(string(body), apiToken) {
		t.Fatalf("redeem after the rules stopped allowing web-1: %d (value in body: %v), want 403 without the value", code, strings.Contains(string(body), apiToken))
	}
	code, body = e.request("GET", path+"/status", nil, nil)
	var st HandleStatus
	if code != 200 || json.Unmarshal(body, &st) != nil || !st.Used {
		t.Fatalf("status after a denied redeem: %d %s, want the handle used up", code, body)
	}
	entries := e.auditEntries()
	if n := countAudit(entries, "deny", "denied secret api-token v1 to machine web-1 via handle"); n != 1 {
		t.Fatalf("%d deny entries, want 1: %+v", n, entries)
	}
	if n := countAudit(entries, "release", "via handle"); n != 0 {
		t.Fatalf("%d release entries, want none", n)
	}
	// The labels come back: the burnt handle stays burnt.
	e.setLabels("web-1", map[string]string{"role": "web"})
	if code, body := e.request("GET", path, nil, nil); code == http.StatusOK || strings.Contains(string(body), apiToken) {
		t.Fatalf("redeem of a denied handle after the labels came back: %d (value in body: %v)", code, strings.Contains(string(body), apiToken))
	}
}
