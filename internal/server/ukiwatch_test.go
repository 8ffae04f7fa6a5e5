package server

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/testkit"
)

// TestUKIAgentWatchAsServed: the agent watch of a UKI download works in the server
// as `kiln serve` assembles it (the boot server's inventory is wrapped for A/B slot
// phone-homes; a wrapper that hid the timeline made the watch do nothing, and the
// Secure Boot e2e caught it): a UKI fetched with no agent after it puts an
// AgentMissing event on the machine's timeline.
func TestUKIAgentWatchAsServed(t *testing.T) {
	s := startTestServer(t, Config{UKIAgentDeadline: 300 * time.Millisecond})
	dir := s.cfg.artifactDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agent.efi"), []byte("MZ not really a UKI"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	inv := &inventory.Service{Store: s.Store()}
	if _, err := testkit.Apply(ctx, inv, `
kind: Artifact
metadata: {name: kiln-agent-uki}
spec: {source: agent.efi}
---
kind: Profile
metadata: {name: secure}
spec: {boot: {agent: true, uki: true}}
---
kind: Machine
metadata: {name: sb-1}
spec: {profile: secure, interfaces: [{mac: "52:54:00:00:0c:01"}]}
`); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.Addr().String() + "/uki/52-54-00-00-0c-01.efi")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the machine's UKI: %s", resp.Status)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		evs, err := inv.Events(ctx, "sb-1", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Type == "AgentMissing" && strings.Contains(e.Message, "booted artifact kiln-agent-uki") {
				return
			}
		}
	}
	t.Fatal("no AgentMissing event after a UKI download with no agent (the watch did not run)")
}
