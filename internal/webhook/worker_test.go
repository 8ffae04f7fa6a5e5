package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// receiver is a loopback webhook endpoint that verifies signatures and records
// the event ids it accepted; fail decides (by event id and attempt) to answer 500.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	accepted []int64
	attempts []string // "id/attempt" of every request
	bad      int      // requests whose signature did not verify
	fail     func(id int64, attempt string) bool
	got      chan struct{}
}

func newReceiver(t *testing.T, fail func(int64, string) bool) *receiver {
	rc := &receiver{fail: fail, got: make(chan struct{}, 1000)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var e store.Event
		_ = json.Unmarshal(body, &e)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		defer func() { rc.got <- struct{}{} }()
		if err := Verify(testKey, r.Header.Get(TimestampHeader), r.Header.Get(SignatureHeader), body, time.Now(), DefaultTolerance); err != nil {
			rc.bad++
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if r.Header.Get(EventIDHeader) != fmt.Sprint(e.ID) {
			rc.bad++
		}
		rc.attempts = append(rc.attempts, fmt.Sprintf("%d/%s", e.ID, r.Header.Get(AttemptHeader)))
		if rc.fail != nil && rc.fail(e.ID, r.Header.Get(AttemptHeader)) {
			http.Error(w, "try later", http.StatusInternalServerError)
			return
		}
		rc.accepted = append(rc.accepted, e.ID)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) snapshot() (accepted []int64, attempts []string, bad int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]int64(nil), rc.accepted...), append([]string(nil), rc.attempts...), rc.bad
}

// waitAccepted waits until n events were accepted.
func (rc *receiver) waitAccepted(t *testing.T, n int) []int64 {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		if acc, _, _ := rc.snapshot(); len(acc) >= n {
			return acc
		}
		select {
		case <-rc.got:
		case <-deadline:
			acc, att, bad := rc.snapshot()
			t.Fatalf("accepted %v (attempts %v, %d bad) after 15 s; want %d", acc, att, bad, n)
		}
	}
}

type env struct {
	st store.Store
}

func newEnv(t *testing.T) *env {
	return &env{st: testkit.OpenSQLite(t, filepath.Join(t.TempDir(), "data"))}
}

func (e *env) addHook(t *testing.T, name string, spec resource.WebhookSpec) {
	t.Helper()
	b, _ := json.Marshal(spec)
	err := e.st.Update(context.Background(), func(tx store.Tx) error {
		return tx.Create(context.Background(), &resource.Object{APIVersion: resource.APIVersion, Kind: "Webhook", Metadata: resource.Metadata{Name: name}, Spec: b})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) event(t *testing.T, machine, typ string) int64 {
	t.Helper()
	ev := &store.Event{Machine: machine, Type: typ, Message: "m"}
	if err := e.st.Update(context.Background(), func(tx store.Tx) error { return tx.AddEvent(context.Background(), ev) }); err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

// run starts a worker with the allow-list; the returned func stops it.
func (e *env) run(t *testing.T, allow []string) (stop func()) {
	t.Helper()
	pol, err := boot.ParseSourcePolicy(allow)
	if err != nil {
		t.Fatal(err)
	}
	w := &Worker{Store: e.st, State: e.st.(store.WebhookState), Owner: "test", Poll: 20 * time.Millisecond,
		Notify: e.st.(store.CommitNotifier), Client: pol.DirectClient(5 * time.Second),
		Key: func(context.Context, string, string) ([]byte, error) { return testKey, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitClaimed waits until a worker holds the webhook's lease (its cursor is set:
// events written from then on are its to deliver).
func (e *env) waitClaimed(t *testing.T, name string) {
	t.Helper()
	ws := e.st.(store.WebhookState)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		// A claim by another owner fails while the worker holds the lease.
		if _, ok, err := ws.ClaimWebhook(context.Background(), name, "probe", 0, time.Now(), time.Now()); err == nil && !ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("webhook %s was not claimed within 10 s", name)
}

// waitCursor waits until the webhook's stored cursor reached id.
func (e *env) waitCursor(t *testing.T, name string, id int64) {
	t.Helper()
	ws := e.st.(store.WebhookState)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cur, _, err := ws.ClaimWebhook(context.Background(), name, "probe", 0, time.Now(), time.Now()); err == nil && cur >= id {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("webhook %s's cursor did not reach %d within 10 s", name, id)
}

// TestSignedOrderedRetried: every delivery verifies under the key with a fresh
// timestamp; an event that fails twice is retried (with backoff) before the next
// is sent, so the receiver accepts them in order.
func TestSignedOrderedRetried(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(id int64, attempt string) bool { return id == 2 && attempt != "3" })
	e.addHook(t, "h", resource.WebhookSpec{URL: rc.URL, SecretRef: "k", Retry: resource.WebhookRetry{MaxAttempts: 5, InitialBackoff: "10ms"}})
	e.run(t, []string{"127.0.0.1"})
	e.waitClaimed(t, "h")
	for range 4 {
		e.event(t, "web-1", "dhcp")
	}
	acc := rc.waitAccepted(t, 4)
	_, att, bad := rc.snapshot()
	if fmt.Sprint(acc) != "[1 2 3 4]" || bad != 0 {
		t.Errorf("accepted %v (%d bad signatures); want [1 2 3 4], none bad", acc, bad)
	}
	if strings.Join(att, ",") != "1/1,2/1,2/2,2/3,3/1,4/1" {
		t.Errorf("attempts %v; want event 2 three times before event 3", att)
	}
}

// TestDeadLetterThenNext: an event refused every time is dead-lettered after
// maxAttempts with the last status; the events after it are still delivered.
func TestDeadLetterThenNext(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(id int64, _ string) bool { return id == 1 })
	e.addHook(t, "h", resource.WebhookSpec{URL: rc.URL, SecretRef: "k", Retry: resource.WebhookRetry{MaxAttempts: 3, InitialBackoff: "5ms"}})
	e.run(t, []string{"127.0.0.1"})
	e.waitClaimed(t, "h")
	e.event(t, "web-1", "dhcp")
	e.event(t, "web-1", "dhcp")
	if acc := rc.waitAccepted(t, 1); fmt.Sprint(acc) != "[2]" {
		t.Errorf("accepted %v; want [2]", acc)
	}
	dl, err := e.st.(store.WebhookState).WebhookDeliveries(context.Background(), "h", 10)
	if err != nil || len(dl) != 1 || dl[0].EventID != 1 || dl[0].Attempts != 3 || dl[0].LastStatus != 500 || dl[0].State != "failed" {
		t.Fatalf("dead letters %+v, %v; want event 1 failed after 3 attempts with 500", dl, err)
	}
}

// TestRestartResumesCursor: a new worker on the same store (a restarted Kiln)
// goes on after the last delivered event: nothing again, nothing skipped.
func TestRestartResumesCursor(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	e.addHook(t, "h", resource.WebhookSpec{URL: rc.URL, SecretRef: "k"})
	stop := e.run(t, []string{"127.0.0.1"})
	e.waitClaimed(t, "h")
	e.event(t, "web-1", "dhcp")
	e.event(t, "web-1", "dhcp")
	rc.waitAccepted(t, 2)
	e.waitCursor(t, "h", 2) // accepted and recorded: a stop now is clean
	stop()
	// Written while no worker runs. The restarted one is the same owner (host and
	// data dir), so it need not wait for its old lease to expire.
	e.event(t, "web-1", "dhcp")
	e.event(t, "web-1", "dhcp")
	e.run(t, []string{"127.0.0.1"})
	if acc := rc.waitAccepted(t, 4); fmt.Sprint(acc) != "[1 2 3 4]" {
		t.Errorf("accepted %v across the restart; want [1 2 3 4]", acc)
	}
	time.Sleep(100 * time.Millisecond)
	if acc, _, _ := rc.snapshot(); len(acc) != 4 {
		t.Errorf("accepted %v: a delivery was repeated", acc)
	}
}

// TestFilterTypesAndMachineLabels: only the listed types of machines the
// selector picks are sent.
func TestFilterTypesAndMachineLabels(t *testing.T) {
	e := newEnv(t)
	for _, m := range []struct{ name, rack string }{{"web-1", "r1"}, {"web-2", "r2"}} {
		err := e.st.Update(context.Background(), func(tx store.Tx) error {
			return tx.Create(context.Background(), &resource.Object{APIVersion: resource.APIVersion, Kind: "Machine",
				Metadata: resource.Metadata{Name: m.name, Labels: map[string]string{"rack": m.rack}}, Spec: json.RawMessage(`{}`)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	rc := newReceiver(t, nil)
	e.addHook(t, "h", resource.WebhookSpec{URL: rc.URL, SecretRef: "k", Events: resource.WebhookEvents{Types: []string{"workflow"}, MachineSelector: "rack=r1"}})
	e.run(t, []string{"127.0.0.1"})
	e.waitClaimed(t, "h")
	e.event(t, "web-1", "dhcp")
	e.event(t, "web-2", "workflow")
	want := e.event(t, "web-1", "workflow")
	if acc := rc.waitAccepted(t, 1); fmt.Sprint(acc) != fmt.Sprint([]int64{want}) {
		t.Errorf("accepted %v; want only web-1's workflow event %d", acc, want)
	}
}

// TestSSRFRefused: without an allow-list entry, a webhook to loopback is never
// called; the delivery is dead-lettered with the refusal.
func TestSSRFRefused(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	e.addHook(t, "h", resource.WebhookSpec{URL: rc.URL, SecretRef: "k", Retry: resource.WebhookRetry{MaxAttempts: 2, InitialBackoff: "5ms"}})
	e.run(t, nil) // public addresses only
	e.waitClaimed(t, "h")
	e.event(t, "web-1", "dhcp")
	ws := e.st.(store.WebhookState)
	deadline := time.Now().Add(10 * time.Second)
	var dl []store.WebhookDelivery
	for len(dl) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		dl, _ = ws.WebhookDeliveries(context.Background(), "h", 10)
	}
	if len(dl) != 1 || !strings.Contains(dl[0].LastError, "not allowed") || dl[0].LastStatus != 0 {
		t.Fatalf("dead letters %+v; want the loopback call refused as not allowed", dl)
	}
	if strings.Contains(dl[0].LastError, rc.URL) {
		t.Errorf("the error repeats the URL (which may carry a credential): %q", dl[0].LastError)
	}
	if _, att, _ := rc.snapshot(); len(att) != 0 {
		t.Errorf("the receiver was called: %v", att)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":1}`)
	ts, sig := Sign(testKey, now, body)
	if err := Verify(testKey, ts, sig, body, now.Add(time.Minute), DefaultTolerance); err != nil {
		t.Errorf("a fresh delivery: %v", err)
	}
	for name, c := range map[string]struct {
		key       []byte
		ts, sig   string
		body      []byte
		now       time.Time
		wantError string
	}{
		"other body":   {testKey, ts, sig, []byte(`{"id":2}`), now, "does not match"},
		"other key":    {[]byte("x"), ts, sig, body, now, "does not match"},
		"other time":   {testKey, fmt.Sprint(now.Unix() + 1), sig, body, now, "does not match"},
		"replayed":     {testKey, ts, sig, body, now.Add(time.Hour), "too old"},
		"no prefix":    {testKey, ts, strings.TrimPrefix(sig, "sha256="), body, now, "not sha256"},
		"bad time":     {testKey, "soon", sig, body, now, "not a Unix time"},
		"empty header": {testKey, ts, "", body, now, "not sha256"},
	} {
		err := Verify(c.key, c.ts, c.sig, c.body, c.now, DefaultTolerance)
		if err == nil || !strings.Contains(err.Error(), c.wantError) {
			t.Errorf("%s: %v; want %q", name, err, c.wantError)
		}
	}
}
