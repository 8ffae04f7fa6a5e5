package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/watch"
	"github.com/kilnhq/kiln/internal/webhook"
)

// runServer runs a Kiln (New and Run) on loopback until the test ends.
func runServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg.DataDir, cfg.Listen, cfg.Version = t.TempDir(), "127.0.0.1:0", "test"
	cfg.HTTPSListen = ""
	s, err := New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return: a stream holds the shutdown up?")
		}
	})
	return s
}

// openWatch opens a watch; the response body is closed when the test ends.
func openWatch(t *testing.T, s *Server, token, path string, header ...string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr().String()+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// nextMessage reads the next message of a stream, failing after 10 s.
func nextMessage(t *testing.T, d *watch.Decoder) watch.Received {
	t.Helper()
	type result struct {
		m   watch.Received
		err error
	}
	c := make(chan result, 1)
	go func() { m, err := d.Next(); c <- result{m, err} }()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatalf("read the stream: %v", r.err)
		}
		return r.m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10 s")
	}
	return watch.Received{}
}

func addEvent(t *testing.T, st store.Store, machine, typ, msg string) {
	t.Helper()
	if err := st.Update(context.Background(), func(tx store.Tx) error {
		return tx.AddEvent(context.Background(), &store.Event{Machine: machine, Type: typ, Message: msg})
	}); err != nil {
		t.Fatal(err)
	}
}

// TestWatchAuthAndRoles: no token is 401 and a bad one 401 (no stream); a viewer
// may watch events and objects.
func TestWatchAuthAndRoles(t *testing.T) {
	s := runServer(t, Config{})
	tokens := roleTokens(t, s.store)
	for _, path := range []string{"/api/v1/events?watch=1", "/api/v1/machines?watch=1"} {
		if resp := openWatch(t, s, "", path); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d; want 401", path, resp.StatusCode)
		}
		if resp := openWatch(t, s, "kiln_nosuchtoken", path); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s with a bad token: %d; want 401", path, resp.StatusCode)
		}
		resp := openWatch(t, s, tokens[store.RoleViewer], path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("%s as viewer: %d %s; want 200 text/event-stream", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp := openWatch(t, s, tokens[store.RoleViewer], "/api/v1/leases?watch=1"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a watch of leases (not logged): %d; want 400", resp.StatusCode)
	}
}

// TestWatchEventsResumeAndFilters: a viewer's stream of one machine's events;
// a reconnect with Last-Event-ID gets exactly what followed, also what was
// written while it was away; ?resourceVersion= does the same.
func TestWatchEventsResumeAndFilters(t *testing.T) {
	s := runServer(t, Config{})
	tok := roleTokens(t, s.store)[store.RoleViewer]
	resp := openWatch(t, s, tok, "/api/v1/events?watch=1&machine=web-1&type=dhcp,script")
	d := watch.NewDecoder(resp.Body)
	addEvent(t, s.store, "web-2", "dhcp", "other machine")
	addEvent(t, s.store, "web-1", "tftp", "other type")
	addEvent(t, s.store, "web-1", "dhcp", "first")
	m := nextMessage(t, d)
	if m.Event != "event" || m.ID != "3" || !strings.Contains(m.Data, `"message":"first"`) {
		t.Fatalf("first message: %+v; want event 3 (web-1's dhcp)", m)
	}
	resp.Body.Close() // the client goes away
	addEvent(t, s.store, "web-1", "script", "while away")
	addEvent(t, s.store, "web-1", "dhcp", "while away 2")
	resp = openWatch(t, s, tok, "/api/v1/events?watch=1&machine=web-1&type=dhcp,script", "Last-Event-ID", m.ID)
	d = watch.NewDecoder(resp.Body)
	addEvent(t, s.store, "web-1", "dhcp", "live")
	var got []string
	for range 3 {
		m := nextMessage(t, d)
		got = append(got, m.ID)
	}
	if strings.Join(got, ",") != "4,5,6" {
		t.Errorf("after reconnecting from 3: ids %v; want 4,5,6", got)
	}
	resp = openWatch(t, s, tok, "/api/v1/events?watch=1&resourceVersion=5")
	if m := nextMessage(t, watch.NewDecoder(resp.Body)); m.ID != "6" {
		t.Errorf("from resourceVersion=5: %+v; want 6", m)
	}
}

// TestWatchObjectsSnapshotThenChanges: without a version the stream starts with
// the selected objects as ADDED, then an id to resume from, then each write;
// other kinds and labels outside the selector are not sent.
func TestWatchObjectsSnapshotThenChanges(t *testing.T) {
	s := runServer(t, Config{})
	tok := roleTokens(t, s.store)
	apply := func(yaml string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.Addr().String()+"/api/v1/apply", strings.NewReader(yaml))
		req.Header.Set("Authorization", "Bearer "+tok[store.RoleOperator])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("apply: %d %s", resp.StatusCode, b)
		}
	}
	macs := 0
	machine := func(name, rack string) string {
		macs++
		return fmt.Sprintf(`{"kind":"Machine","metadata":{"name":%q,"labels":{"rack":%q}},"spec":{"interfaces":[{"mac":"52:54:00:00:00:%02x"}]}}`, name, rack, macs)
	}
	apply(`{"objects":[` + machine("web-1", "r1") + `,` + machine("db-1", "r2") + `]}`)
	resp := openWatch(t, s, tok[store.RoleViewer], "/api/v1/machines?watch=1&labelSelector=rack%3Dr1")
	d := watch.NewDecoder(resp.Body)
	if m := nextMessage(t, d); m.Event != "ADDED" || m.ID != "" || !strings.Contains(m.Data, `"name":"web-1"`) {
		t.Fatalf("snapshot: %+v; want web-1 ADDED without an id", m)
	}
	apply(`{"objects":[` + machine("web-2", "r1") + `,` + machine("db-2", "r2") + `]}`)
	m := nextMessage(t, d)
	if m.Event != "ADDED" || m.ID == "" || !strings.Contains(m.Data, `"name":"web-2"`) {
		t.Fatalf("live: %+v; want web-2 ADDED with an id", m)
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+s.Addr().String()+"/api/v1/machines/web-1", nil)
	req.Header.Set("Authorization", "Bearer "+tok[store.RoleOperator])
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("delete web-1: %v %v", err, resp)
	}
	if m := nextMessage(t, d); m.Event != "DELETED" || !strings.Contains(m.Data, `"name":"web-1"`) {
		t.Fatalf("after the delete: %+v; want web-1 DELETED", m)
	}
}

// TestWatchGoneAfterRetention: a version older than what retention kept is 410,
// for the stream and the list alike; the floor itself is fine.
func TestWatchGoneAfterRetention(t *testing.T) {
	s := runServer(t, Config{})
	tok := roleTokens(t, s.store)[store.RoleViewer]
	for i := range 5 {
		addEvent(t, s.store, "web-1", "dhcp", fmt.Sprint(i))
	}
	if _, err := s.store.(store.Retainer).PruneEvents(context.Background(), time.Time{}, 2); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/v1/events?watch=1&resourceVersion=1", "/api/v1/events?resourceVersion=1"} {
		resp := openWatch(t, s, tok, path)
		if resp.StatusCode != http.StatusGone {
			t.Errorf("%s with events 1..3 removed: %d; want 410", path, resp.StatusCode)
		}
	}
	resp := openWatch(t, s, tok, "/api/v1/events?watch=1", "Last-Event-ID", "3")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("from the floor: %d", resp.StatusCode)
	}
	if m := nextMessage(t, watch.NewDecoder(resp.Body)); m.ID != "4" {
		t.Errorf("from the floor: %+v; want 4", m)
	}
}

// TestWatchLimitPerCaller: one token may hold WatchesPerCaller streams; the next
// is 429 until one closes; another token is not affected.
func TestWatchLimitPerCaller(t *testing.T) {
	s := runServer(t, Config{WatchesPerCaller: 2})
	tok := roleTokens(t, s.store)
	a := openWatch(t, s, tok[store.RoleViewer], "/api/v1/events?watch=1")
	openWatch(t, s, tok[store.RoleViewer], "/api/v1/machines?watch=1")
	if resp := openWatch(t, s, tok[store.RoleViewer], "/api/v1/events?watch=1"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("third watch of one token: %d; want 429", resp.StatusCode)
	}
	if resp := openWatch(t, s, tok[store.RoleOperator], "/api/v1/events?watch=1"); resp.StatusCode != http.StatusOK {
		t.Errorf("another token's watch: %d; want 200", resp.StatusCode)
	}
	a.Body.Close()
	// The server notices the close when it next writes: a keepalive or a message.
	addEvent(t, s.store, "web-1", "dhcp", "x")
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp := openWatch(t, s, tok[store.RoleViewer], "/api/v1/events?watch=1")
		if resp.StatusCode == http.StatusOK {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("a closed watch was not released within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWebhookThroughServer: a Webhook applied through the API, signed with its
// Secret's value (released to the signer, audited), receives the events written
// after it, on a loopback receiver allowed by WebhookAllow; its dead-letter list is
// served to viewers, and an unknown webhook's is 404.
func TestWebhookThroughServer(t *testing.T) {
	s := runServer(t, Config{WebhookAllow: []string{"127.0.0.1"}})
	tok := roleTokens(t, s.store)
	ctx := context.Background()
	key := []byte("a-webhook-signing-key-of-32-byte")
	if _, err := s.secrets.Set(ctx, inventory.Actor{ID: "test"}, "hook-key", key); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify(key, r.Header.Get(webhook.TimestampHeader), r.Header.Get(webhook.SignatureHeader), body, time.Now(), webhook.DefaultTolerance); err != nil {
			got <- "bad signature: " + err.Error()
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		got <- string(body)
	}))
	defer rc.Close()
	hook := fmt.Sprintf(`{"objects":[{"kind":"Webhook","metadata":{"name":"h"},"spec":{"url":%q,"secretRef":"hook-key","events":{"types":["workflow"]}}}]}`, rc.URL)
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.Addr().String()+"/api/v1/apply", strings.NewReader(hook))
	req.Header.Set("Authorization", "Bearer "+tok[store.RoleOperator])
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("apply the webhook: %v %v", err, resp)
	}
	resp.Body.Close()
	// The worker picks the webhook up within its poll; events from then on are its.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok, _ := s.store.(store.WebhookState).ClaimWebhook(ctx, "h", "probe", 0, time.Now(), time.Now()); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the webhook was not picked up within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	addEvent(t, s.store, "web-1", "dhcp", "not sent")
	addEvent(t, s.store, "web-1", "workflow", "sent")
	select {
	case body := <-got:
		if !strings.Contains(body, `"message":"sent"`) {
			t.Errorf("delivered %s; want the workflow event", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10 s")
	}
	if n := len(testkit.AuditEntries(t, s.store, "release")); n == 0 {
		t.Error("the release of the signing key is not audited")
	}
	for path, want := range map[string]int{"/api/v1/webhooks/h/deliveries?failed=1": http.StatusOK, "/api/v1/webhooks/nope/deliveries": http.StatusNotFound} {
		resp := openWatch(t, s, tok[store.RoleViewer], path)
		if resp.StatusCode != want {
			t.Errorf("GET %s as viewer: %d; want %d", path, resp.StatusCode, want)
		}
	}
}

// TestWatchBadInput: a malformed resource version, machine or type list is 400
// naming the field, before any stream starts.
func TestWatchBadInput(t *testing.T) {
	s := runServer(t, Config{})
	tok := roleTokens(t, s.store)[store.RoleViewer]
	for path, field := range map[string]string{
		"/api/v1/events?watch=1&resourceVersion=abc":     "resourceVersion",
		"/api/v1/events?watch=1&resourceVersion=-1":      "resourceVersion",
		"/api/v1/machines?watch=1&resourceVersion=1e3":   "resourceVersion",
		"/api/v1/events?watch=1&machine=Not%20A%20Name":  "machine",
		"/api/v1/events?watch=1&type=dhcp,,tftp":         "type",
		"/api/v1/machines?watch=1&labelSelector=%21%21a": "label selector",
		"/api/v1/webhooks/x/deliveries?failed=maybe":     "failed",
	} {
		resp := openWatch(t, s, tok, path)
		if resp.StatusCode == http.StatusOK {
			t.Errorf("GET %s: 200 (a stream); want 400 naming %s", path, field)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), field) {
			t.Errorf("GET %s: %d %s; want 400 naming %s", path, resp.StatusCode, body, field)
		}
	}
	resp := openWatch(t, s, tok, "/api/v1/events?watch=1", "Last-Event-ID", "x")
	if resp.StatusCode == http.StatusOK {
		t.Fatal("Last-Event-ID x: 200 (a stream); want 400")
	}
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "Last-Event-ID") {
		t.Errorf("Last-Event-ID x: %d %s; want 400 naming Last-Event-ID", resp.StatusCode, body)
	}
}

// TestWatchSelectorFollowsRelabels: under a label selector an object whose labels
// leave the selection arrives as DELETED and one whose labels enter it as ADDED
// (as Kubernetes does), and writes to objects that stay outside send nothing; a
// resumed watch knows the objects that match at its start.
func TestWatchSelectorFollowsRelabels(t *testing.T) {
	s := runServer(t, Config{})
	tok := roleTokens(t, s.store)
	apply := func(objs ...string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.Addr().String()+"/api/v1/apply", strings.NewReader(`{"objects":[`+strings.Join(objs, ",")+`]}`))
		req.Header.Set("Authorization", "Bearer "+tok[store.RoleOperator])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("apply: %d %s", resp.StatusCode, b)
		}
	}
	machine := func(name, rack string, mac int) string {
		return fmt.Sprintf(`{"kind":"Machine","metadata":{"name":%q,"labels":{"rack":%q}},"spec":{"interfaces":[{"mac":"52:54:00:00:01:%02x"}]}}`, name, rack, mac)
	}
	apply(machine("web-1", "r1", 1), machine("db-1", "r2", 2))
	resp := openWatch(t, s, tok[store.RoleViewer], "/api/v1/machines?watch=1&labelSelector=rack%3Dr1")
	d := watch.NewDecoder(resp.Body)
	if m := nextMessage(t, d); m.Event != "ADDED" || !strings.Contains(m.Data, `"name":"web-1"`) {
		t.Fatalf("snapshot: %+v; want web-1 ADDED", m)
	}
	apply(machine("web-1", "r2", 1)) // leaves the selection
	m := nextMessage(t, d)
	if m.Event != "DELETED" || m.ID == "" || !strings.Contains(m.Data, `"name":"web-1"`) {
		t.Fatalf("web-1 relabelled out of rack=r1: %+v; want web-1 DELETED with an id", m)
	}
	apply(machine("web-1", "r3", 1)) // stays outside: nothing
	apply(machine("db-1", "r1", 2))  // enters the selection
	m = nextMessage(t, d)
	if m.Event != "ADDED" || !strings.Contains(m.Data, `"name":"db-1"`) {
		t.Fatalf("db-1 relabelled into rack=r1: %+v; want db-1 ADDED (and nothing for web-1 outside)", m)
	}
	resumeAt := m.ID
	apply(machine("db-1", "r1", 3)) // stays inside
	if m := nextMessage(t, d); m.Event != "MODIFIED" || !strings.Contains(m.Data, `"name":"db-1"`) {
		t.Fatalf("db-1 changed inside the selection: %+v; want MODIFIED", m)
	}
	// A resumed watch: db-1 matches at its start, so it leaving is DELETED.
	resumed := openWatch(t, s, tok[store.RoleViewer], "/api/v1/machines?watch=1&labelSelector=rack%3Dr1&resourceVersion="+resumeAt)
	rd := watch.NewDecoder(resumed.Body)
	if m := nextMessage(t, rd); m.Event != "MODIFIED" || !strings.Contains(m.Data, `"name":"db-1"`) {
		t.Fatalf("resumed at %s: %+v; want db-1 MODIFIED", resumeAt, m)
	}
	apply(machine("db-1", "r2", 3))
	for _, dec := range []*watch.Decoder{d, rd} {
		if m := nextMessage(t, dec); m.Event != "DELETED" || !strings.Contains(m.Data, `"name":"db-1"`) {
			t.Fatalf("db-1 relabelled out: %+v; want db-1 DELETED", m)
		}
	}
	// Resumed from before db-1 left: db-1 matches no more now, but the client's
	// list (at resumeAt) holds it, so the replayed write that took it out is DELETED.
	late := openWatch(t, s, tok[store.RoleViewer], "/api/v1/machines?watch=1&labelSelector=rack%3Dr1&resourceVersion="+resumeAt)
	ld := watch.NewDecoder(late.Body)
	for _, want := range []string{"MODIFIED", "DELETED"} {
		if m := nextMessage(t, ld); m.Event != want || !strings.Contains(m.Data, `"name":"db-1"`) {
			t.Fatalf("resumed at %s after db-1 left: %+v; want db-1 %s", resumeAt, m, want)
		}
	}
}
