package secrets

import (
	"context"
	"path"
	"testing"
)

// TestIssuePurgesOnlyOldHandles: issuing a handle purges handles that expired
// longer than the retention ago, never one still live: a handle issued a moment
// earlier is redeemed after another is issued.
func TestIssuePurgesOnlyOldHandles(t *testing.T) {
	e := newFleet(t)
	ctx := context.Background()
	first, _, err := e.svc.IssueHandle(ctx, "token:admin", "web-1", "api-token", "cmdline", 0, "https://kiln.test:8443")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.IssueHandle(ctx, "token:admin", "web-1", "api-token", "cmdline", 0, "https://kiln.test:8443"); err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.Redeem(ctx, path.Base(first), "127.0.0.1")
	if err != nil || string(r.Value) != apiToken {
		t.Fatalf("the first handle after a second was issued: %v, want its value", err)
	}
}
