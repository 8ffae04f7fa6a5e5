package boot_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

const ukiManifests = `
kind: Artifact
metadata: {name: kiln-agent-uki}
spec: {source: kiln-agent.efi}
---
kind: Artifact
metadata: {name: other-uki}
spec: {source: other.efi}
---
kind: Profile
metadata: {name: secure}
spec:
  boot: {agent: true, uki: true}
---
kind: Profile
metadata: {name: named}
spec:
  boot: {kernel: other-uki, uki: other-uki}
---
kind: Profile
metadata: {name: ipxe-only}
spec:
  boot: {agent: true}
---
kind: Machine
metadata: {name: sb-1}
spec: {profile: secure, interfaces: [{mac: "52:54:00:00:0b:01"}]}
---
kind: Machine
metadata: {name: sb-2}
spec: {profile: named, interfaces: [{mac: "52:54:00:00:0b:02"}]}
---
kind: Machine
metadata: {name: sb-done}
spec: {profile: secure, interfaces: [{mac: "52:54:00:00:0b:03"}]}
---
kind: Machine
metadata: {name: plain-1}
spec: {profile: ipxe-only, interfaces: [{mac: "52:54:00:00:0b:04"}]}
`

func newUKIEnv(t *testing.T, deadline time.Duration) (*env, *boot.Server) {
	t.Helper()
	kst := testkit.NewStore(t, ukiManifests)
	art := filepath.Join(t.TempDir(), "artifacts")
	os.MkdirAll(art, 0o755)
	os.WriteFile(filepath.Join(art, "kiln-agent.efi"), []byte("MZ the agent UKI"), 0o644)
	os.WriteFile(filepath.Join(art, "other.efi"), []byte("MZ another UKI"), 0o644)
	b := &boot.Server{Inventory: kst.Inv, Artifacts: &boot.ArtifactStore{Dir: art, Recorder: kst.Inv}, AgentDeadline: deadline}
	t.Cleanup(b.StopWatches)
	mux := http.NewServeMux()
	b.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e := &env{t: t, inv: kst.Inv, srv: srv, dir: art}
	e.setState("sb-done", "provisioned")
	return e, b
}

// TestUKIByMachineState: /uki/<mac>.efi serves the profile's UKI artifact (true:
// kiln-agent-uki, or the one named) as application/efi to a machine that boots its
// profile, and 404 with a BootLocal event to a provisioned one; a profile without
// spec.boot.uki, an unknown MAC and a malformed name get no image.
func TestUKIByMachineState(t *testing.T) {
	e, _ := newUKIEnv(t, -1)
	for _, c := range []struct {
		path, body string
	}{
		{"/uki/52-54-00-00-0b-01.efi", "MZ the agent UKI"},
		{"/uki/52-54-00-00-0b-02.efi", "MZ another UKI"},
	} {
		resp, err := http.Get(e.srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != 200 || body != c.body || resp.Header.Get("Content-Type") != "application/efi" {
			t.Errorf("%s: %d %q %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	// The fetch is recorded after the body is sent: wait for it (bounded).
	var evs []store.Event
	for i := 0; i < 100; i++ {
		evs, _ = e.inv.Events(context.Background(), "sb-1", 10)
		if len(evs) > 0 && evs[len(evs)-1].Type == "ArtifactFetched" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(evs) == 0 || evs[len(evs)-1].Type != "ArtifactFetched" || !strings.HasPrefix(evs[len(evs)-1].Message, "kiln-agent-uki:") {
		t.Errorf("sb-1 timeline: %+v", evs)
	}
	for path, want := range map[string]int{
		"/uki/52-54-00-00-0b-03.efi": 404, // provisioned: boots its disk
		"/uki/52-54-00-00-0b-04.efi": 404, // profile without a UKI
		"/uki/52-54-00-00-0b-99.efi": 404, // unknown
		"/uki/52-54-00-00-0b-01.img": 400,
		"/uki/nonsense.efi":          400,
	} {
		if code, body := e.get(path); code != want || strings.Contains(body, "MZ") {
			t.Errorf("%s: %d %q, want %d and no image", path, code, body, want)
		}
	}
	evs, _ = e.inv.Events(context.Background(), "sb-done", 10)
	if len(evs) == 0 || evs[len(evs)-1].Type != "BootLocal" || !strings.Contains(evs[len(evs)-1].Message, "provisioned") {
		t.Errorf("sb-done timeline: %+v", evs)
	}
}

// TestUKIAgentWatch: a UKI download with no agent after it gets an AgentMissing
// event naming the image; one followed by the agent's enrollment does not.
func TestUKIAgentWatch(t *testing.T) {
	e, _ := newUKIEnv(t, 2*time.Second)
	ctx := context.Background()
	if code, _ := e.get("/uki/52-54-00-00-0b-02.efi"); code != 200 {
		t.Fatalf("sb-2: %d", code)
	}
	// sb-2's agent shows up (well within the deadline, even on a loaded machine).
	if err := e.inv.AddEvent(ctx, store.Event{Machine: "sb-2", Time: time.Now().UTC(), Type: "EnrollmentPending", Message: "from 10.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.get("/uki/52-54-00-00-0b-01.efi"); code != 200 {
		t.Fatalf("sb-1: %d", code)
	}
	missing := func(machine string) string {
		evs, _ := e.inv.Events(ctx, machine, 20)
		for _, ev := range evs {
			if ev.Type == "AgentMissing" {
				return ev.Message
			}
		}
		return ""
	}
	// Wait (bounded) for sb-1's watch to fire; sb-2's fired at the same time.
	for i := 0; i < 100 && missing("sb-1") == ""; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if m := missing("sb-1"); !strings.Contains(m, "booted artifact kiln-agent-uki") || !strings.Contains(m, "no agent within 2s") {
		t.Errorf("sb-1: AgentMissing %q", m)
	}
	time.Sleep(time.Second) // sb-2's watch fired before sb-1's
	if m := missing("sb-2"); m != "" {
		t.Errorf("sb-2 enrolled, yet AgentMissing %q", m)
	}
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestUKIAgentWatchTokenlessRequest: an agent that asked to enroll without a token
// (its request names no machine, so it is on no timeline) counts as shown when the
// request is pending from the address the machine fetched its UKI from.
func TestUKIAgentWatchTokenlessRequest(t *testing.T) {
	e, _ := newUKIEnv(t, time.Second)
	ctx := context.Background()
	if code, _ := e.get("/uki/52-54-00-00-0b-01.efi"); code != 200 {
		t.Fatalf("sb-1: %d", code)
	}
	spec, _ := json.Marshal(resource.EnrollmentSpec{State: "pending", Source: "127.0.0.1", KeyFingerprint: "ab", ExpiresAt: time.Now().Add(time.Hour)})
	if err := e.inv.Store.Update(ctx, func(tx store.Tx) error {
		return tx.Create(ctx, &resource.Object{Kind: "Enrollment", Metadata: resource.Metadata{Name: "enr-0123456789ab"}, Spec: spec})
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the watch fired
	evs, _ := e.inv.Events(ctx, "sb-1", 20)
	for _, ev := range evs {
		if ev.Type == "AgentMissing" {
			t.Errorf("the agent's pending request from the UKI's address was not seen: %s", ev.Message)
		}
	}
}
