package enroll

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Tests for what a pending enrollment request records (the machine it asks for,
// its audit summary, the event on an existing machine) and for housekeeping's
// count of removed requests: mutants of the gremlins run at 2c867e0 that no test
// caught (TESTING.md, internal/enroll).

// TestPendingRequestRecords: a request held for approval stores the machine it
// asks for (the token's machine, else a valid reported hostname), writes an audit
// summary that mentions a TPM EK only when there is one, and puts an
// EnrollmentPending event on the machine only when that machine exists.
func TestPendingRequestRecords(t *testing.T) {
	e := newEnv(t, withApproval(100, 10))
	gatedSpec, _ := json.Marshal(resource.MachineSpec{Profile: "worker", Enrollment: resource.EnrollApprove,
		Interfaces: []resource.Interface{{MAC: "52:54:00:c2:00:03"}}})
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		return tx.Create(e.ctx, &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: "gated-old"}, Spec: gatedSpec,
			Status: json.RawMessage(`{"state":"new"}`)})
	})
	if err != nil {
		t.Fatal(err)
	}
	e.setProfileSpec("gated", gatedProfile)

	for _, c := range []struct {
		name        string
		tok         string
		facts       map[string]any
		wantMachine string
		wantEvent   bool // an EnrollmentPending event on wantMachine
	}{
		{"tokenless, valid hostname", "", facts("52:54:00:c2:00:01", "hostname", "Rack9-Node1"), "rack9-node1", false},
		{"tokenless, invalid hostname", "", facts("52:54:00:c2:00:02", "hostname", "bad_name!"), "", false},
		{"token for an existing machine", e.token(TokenRequest{Profile: "worker", Machine: "gated-old"}),
			facts("52:54:00:c2:00:03", "hostname", "ignored"), "gated-old", true},
		{"token on a gated profile, new machine", e.token(TokenRequest{Profile: "gated"}),
			facts("52:54:00:c2:00:04", "hostname", "gated-new"), "gated-new", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, p, msg := e.requestEnrollment(newKey(t), c.tok, c.facts)
			if code != http.StatusAccepted {
				t.Fatalf("request: %d %s, want 202", code, msg)
			}
			if s := e.enrollmentSpec(p.ID); s.RequestedMachine != c.wantMachine {
				t.Errorf("requested machine %q, want %q", s.RequestedMachine, c.wantMachine)
			}
			var summary string
			for _, a := range e.auditEntries("enrollment-request") {
				if a.Name == p.ID {
					summary = a.Summary
				}
			}
			if summary == "" {
				t.Fatalf("no enrollment-request audit entry for %s", p.ID)
			}
			if strings.Contains(summary, "TPM EK") {
				t.Errorf("summary of a request without a TPM mentions a TPM EK: %q", summary)
			}
			if c.wantMachine == "" {
				return
			}
			if got := e.hasEvent(c.wantMachine, "EnrollmentPending", p.ID); got != c.wantEvent {
				t.Errorf("EnrollmentPending event on %s: %t, want %t", c.wantMachine, got, c.wantEvent)
			}
		})
	}
}

// TestHousekeepCountsRemovedRequests: Housekeep reports how many decided requests
// past the retention it removed; a pending one it only marks expired is not counted.
func TestHousekeepCountsRemovedRequests(t *testing.T) {
	e := newEnv(t, withApproval(100, 10))
	var ids []string
	for _, mac := range []string{"52:54:00:c3:00:01", "52:54:00:c3:00:02", "52:54:00:c3:00:03"} {
		_, p, msg := e.requestEnrollment(newKey(t), "", facts(mac))
		if p == nil {
			t.Fatal(msg)
		}
		ids = append(ids, p.ID)
	}
	for _, id := range ids[:2] {
		if _, err := e.srv.DenyEnrollment(e.ctx, "token:bob", id, "not ours"); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.srv.Housekeep(e.ctx); err != nil || n != 0 {
		t.Fatalf("housekeeping before anything is old: %d, %v; want 0", n, err)
	}
	e.clock.Advance(decidedRetention + DefaultApprovalTTL + time.Hour)
	if n, err := e.srv.Housekeep(e.ctx); err != nil || n != 2 {
		t.Fatalf("housekeeping after the retention: removed %d, %v; want the 2 denied requests", n, err)
	}
	if n := e.count("Enrollment"); n != 1 {
		t.Fatalf("%d requests left, want the one that expired undecided", n)
	}
}
