package enroll

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// TestOperatorCannotApproveIntoSecrets: approving a pending request as a machine a
// Secret is released to hands that machine's secrets to whoever made the request,
// so below admin it is refused, as a join token for such a machine is; a machine no
// Secret selects stays an operator's decision.
func TestOperatorCannotApproveIntoSecrets(t *testing.T) {
	e := newEnv(t, withApproval(100, 5))
	e.createMachine("victim", "worker", "52:54:00:aa:00:16", resource.StateNew)
	e.createMachine("plain", "worker", "52:54:00:aa:00:17", resource.StateNew)
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		spec, _ := json.Marshal(resource.SecretSpec{Machines: []string{"victim"}})
		return tx.Create(e.ctx, &resource.Object{Kind: "Secret", Metadata: resource.Metadata{Name: "victim-key"}, Spec: spec})
	})
	if err != nil {
		t.Fatal(err)
	}
	operator := inventory.Actor{ID: "token:bob", Role: store.RoleOperator}
	admin := inventory.Actor{ID: "token:alice", Role: store.RoleAdmin}

	key := newKey(t)
	code, p, msg := e.requestEnrollment(key, "", facts("52:54:00:aa:00:16", "hostname", "victim"))
	if code != http.StatusAccepted || p == nil {
		t.Fatalf("tokenless request: %d %s, want 202", code, msg)
	}
	_, err = e.srv.ApproveEnrollmentAs(e.ctx, operator, p.ID, "victim")
	var fe *inventory.ForbiddenError
	if !errors.As(err, &fe) {
		t.Fatalf("operator approving a request as victim (a Secret is released to it): %v, want a ForbiddenError", err)
	}
	if code, body := e.poll(key, p.ID); code != http.StatusAccepted {
		t.Fatalf("poll after the refused approval: %d %s, want 202 (still pending)", code, body)
	}
	if _, err := e.srv.ApproveEnrollmentAs(e.ctx, admin, p.ID, "victim"); err != nil {
		t.Fatalf("admin approving as victim: %v", err)
	}

	key2 := newKey(t)
	code, p2, msg := e.requestEnrollment(key2, "", facts("52:54:00:aa:00:17", "hostname", "plain"))
	if code != http.StatusAccepted || p2 == nil {
		t.Fatalf("tokenless request: %d %s, want 202", code, msg)
	}
	if _, err := e.srv.ApproveEnrollmentAs(e.ctx, operator, p2.ID, "plain"); err != nil {
		t.Fatalf("operator approving as plain (no Secret selects it): %v", err)
	}
}
