package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/server"
	"github.com/kilnhq/kiln/internal/sso"
	"github.com/kilnhq/kiln/internal/sso/ssotest"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/ui"
)

const consoleManifests = `
kind: Artifact
metadata: {name: disk-image}
spec: {source: images/disk.raw, sha256: "0000000000000000000000000000000000000000000000000000000000000abc"}
---
kind: Template
metadata: {name: install}
spec:
  timeout: 1h
  actions:
    - name: stream
      type: image2disk
      timeout: 10m
      args: {image: disk-image, disk: /dev/vda}
    - name: reboot
      type: reboot
---
kind: Profile
metadata: {name: p}
spec: {boot: {agent: true}, workflow: install}
---
kind: Machine
metadata: {name: web-1, labels: {rack: r1}}
spec: {profile: p, interfaces: [{mac: "52:54:00:00:00:01", ip: 10.0.0.11}]}
`

// The payloads a hostile machine (its agent's facts, its DHCP hostname in an
// event) or a store written behind the API's back can put in front of an operator.
const (
	xssScript  = `<script>window.__xss=1;alert(1)</script>`
	xssImg     = `<img src=x onerror="window.__xss=2;alert(2)">`
	xssJSURL   = `javascript:window.__xss=3;alert(3)`
	xssMachine = `evil<img src=x onerror=alert(4)>`
)

// console is Kiln (in this process, so that the test can play the agent by
// writing to the store) with single sign-on through a real OpenID provider.
type console struct {
	url   string
	srv   *server.Server
	inv   *inventory.Service
	admin string
}

func startConsole(t *testing.T) *console {
	t.Helper()
	p := ssotest.Start(t)
	addr := testkit.FreeAddr(t)
	base := "http://" + addr
	p.AllowRedirect(base + "/ui/callback")
	dir := t.TempDir()
	srv, err := server.New(context.Background(), server.Config{
		DataDir: filepath.Join(dir, "data"), Listen: addr, Version: "test",
		OIDC: sso.Config{Issuer: p.Issuer, ClientID: p.ClientID, ClientSecretFile: p.SecretFile(t, dir),
			RedirectURL: base + "/ui/callback", Roles: ssotest.Groups},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	testkit.Background(t, "kiln", srv.Run)
	c := &console{url: base, srv: srv, inv: &inventory.Service{Store: srv.Store()},
		admin: testkit.APIToken(t, srv.Store(), store.RoleAdmin, "browser-test")}
	if _, err := testkit.Apply(context.Background(), c.inv, consoleManifests); err != nil {
		t.Fatal(err)
	}
	return c
}

// apiDo calls the API with the admin token.
func (c *console) apiDo(t *testing.T, method, path, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, c.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// agentSays plays the agent: it sets a machine's state and facts and adds
// timeline events, as the agent API does.
func (c *console) agentSays(t *testing.T, machine, state string, facts map[string]any, events ...store.Event) {
	t.Helper()
	ctx := context.Background()
	err := c.srv.Store().Update(ctx, func(tx store.Tx) error {
		m, err := tx.Get(ctx, "Machine", machine)
		if err != nil {
			return err
		}
		var st resource.MachineStatus
		if len(m.Status) > 0 {
			if err := json.Unmarshal(m.Status, &st); err != nil {
				return err
			}
		}
		st.State = state
		if facts != nil {
			st.Facts = facts
		}
		now := time.Now().UTC()
		st.LastSeen = &now
		if m.Status, err = json.Marshal(st); err != nil {
			return err
		}
		if err := tx.Update(ctx, m); err != nil {
			return err
		}
		for i := range events {
			events[i].Machine = machine
			events[i].Time = now.Add(time.Duration(i) * time.Second)
			if err := tx.AddEvent(ctx, &events[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("play the agent of %s: %v", machine, err)
	}
}

// browserSession is headless Chromium at 1280x720 with every JavaScript dialog
// counted (and dismissed): an XSS payload that runs shows up as a dialog.
type browserSession struct {
	t         *testing.T
	ctx       context.Context
	dialogs   atomic.Int32
	artifacts string
	shot      int
}

func newBrowserSession(t *testing.T) *browserSession {
	t.Helper()
	chromium := testkit.NeedTool(t, "chromium", "chromium")
	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1280, 720),
		chromedp.UserDataDir(t.TempDir()))...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	b := &browserSession{t: t, ctx: ctx}
	b.artifacts = t.TempDir()
	if dir := os.Getenv("KILN_TEST_ARTIFACTS"); dir != "" {
		b.artifacts = filepath.Join(dir, "browser", t.Name())
		if err := os.MkdirAll(b.artifacts, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	go func() {
		for _, err := range chromedp.Events(ctx, page.JavascriptDialogOpening) {
			if err != nil {
				return
			}
			b.dialogs.Add(1)
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	t.Cleanup(func() { t.Logf("screenshots in %s", b.artifacts) })
	return b
}

// step runs actions with a bound, so that a page that never shows what the test
// waits for fails the test instead of hanging it.
func (b *browserSession) step(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	// Generous: the machine is shared, and a loaded one runs Chromium slowly.
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.screenshot("failed-" + what)
		b.t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](b *browserSession, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func (b *browserSession) screenshot(name string) {
	b.shot++
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	os.WriteFile(filepath.Join(b.artifacts, fmt.Sprintf("%02d-%s.png", b.shot, name)), png, 0o644)
}

// signIn goes from the console's sign-in page through the provider's form.
func (b *browserSession) signIn(kiln, user string) {
	b.t.Helper()
	b.step("open the console", chromedp.Navigate(kiln+"/ui/"), chromedp.WaitVisible(chromedp.ID("sso-login")))
	b.screenshot("sign-in-page")
	b.step("sign in at the provider as "+user,
		chromedp.Click(chromedp.ID("sso-login")),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), user),
		chromedp.SendKeys(chromedp.ID("password"), ssotest.Password),
		chromedp.Click(chromedp.ID("submit")),
		chromedp.WaitVisible(chromedp.CSS("table#machines")),
		chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.getElementById('who').textContent.includes(%q)`, ssotest.Email(user))))
}

func waitFor(js string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(45*time.Second))
}

// TestConsoleInBrowser: an operator signs in through the OpenID provider, sees a
// machine appear and change state without reloading, reprovisions it after a
// confirmation, and finds the audit entry under their own name; a viewer sees no
// power or reprovision button and the API refuses the write anyway.
func TestConsoleInBrowser(t *testing.T) {
	c := startConsole(t)
	b := newBrowserSession(t)
	b.signIn(c.url, "olga")
	b.screenshot("fleet")

	// First paint, from the browser's own timing of a fresh load of the fleet.
	b.step("reload the fleet", chromedp.Navigate(c.url+"/ui/#/fleet"), chromedp.WaitVisible(chromedp.CSS(`tr[data-machine="web-1"]`)))
	timing := eval[map[string]float64](b, `(() => {
		const n = performance.getEntriesByType('navigation')[0];
		const p = Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]));
		return {ttfb: n.responseStart, domContentLoaded: n.domContentLoadedEventEnd, load: n.loadEventEnd,
			firstPaint: p['first-paint'] || 0, firstContentfulPaint: p['first-contentful-paint'] || 0,
			transferred: performance.getEntriesByType('resource').reduce((a, r) => a + r.transferSize, n.transferSize)};
	})()`)
	t.Logf("fleet page load (ms): first paint %.0f, first contentful paint %.0f, DOMContentLoaded %.0f, load %.0f; bytes transferred %.0f",
		timing["firstPaint"], timing["firstContentfulPaint"], timing["domContentLoaded"], timing["load"], timing["transferred"])

	// A machine added through the API appears, and its state changes live.
	if code := c.apiDo(t, "POST", "/api/v1/machines", `{"kind":"Machine","metadata":{"name":"live-1","labels":{"rack":"r2"}},"spec":{"profile":"p","interfaces":[{"mac":"52:54:00:00:00:42","ip":"10.0.0.42"}]}}`); code != http.StatusCreated {
		t.Fatalf("create live-1: %d", code)
	}
	b.step("see live-1 appear", waitFor(`document.querySelector('tr[data-machine="live-1"]') !== null`))
	c.agentSays(t, "live-1", resource.StateProvisioning, nil)
	b.step("see live-1 provisioning", waitFor(`document.querySelector('tr[data-machine="live-1"] .state-provisioning') !== null`))
	b.step("search by IP", chromedp.SendKeys(chromedp.ID("search"), "10.0.0.42"),
		waitFor(`document.querySelectorAll('#machines tbody tr').length === 1`))
	b.screenshot("fleet-live")

	// A machine's page: its timeline, facts and workflow; reprovision with a confirmation.
	c.agentSays(t, "web-1", resource.StateProvisioned, map[string]any{"cpu": map[string]any{"cores": 4}, "serial": "S123"},
		store.Event{Type: "DHCPAck", Message: "10.0.0.11 to 52:54:00:00:00:01"},
		store.Event{Type: "BootScript", Message: "install script"},
		store.Event{Type: "ArtifactFetched", Message: "kernel 12345678 bytes in 1.2s"},
		store.Event{Type: "Enrolled", Message: "certificate issued"},
		store.Event{Type: "WorkflowSucceeded", Message: "install done"})
	b.step("open web-1", chromedp.Navigate(c.url+"/ui/#/machine/web-1"), chromedp.WaitVisible(chromedp.CSS(`#timeline li[data-type="WorkflowSucceeded"]`)))
	b.screenshot("machine")
	b.step("reprovision web-1",
		chromedp.Click(chromedp.CSS(`button[data-action="reprovision"]`)),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")))
	b.screenshot("confirm")
	b.step("confirm", chromedp.Click(chromedp.ID("confirm-ok")), waitFor(`document.getElementById('machine-message').className === 'ok'`),
		waitFor(`document.querySelector('#workflow .state-pending, #workflow .state-running') !== null`))
	b.screenshot("reprovisioned")
	b.step("find the audit entry", chromedp.Navigate(c.url+"/ui/#/audit"),
		waitFor(`[...document.querySelectorAll('#audit tbody tr')].some(r => r.cells[2].textContent === 'user:olga@example.test' && r.cells[3].textContent === 'reprovision' && r.cells[4].textContent === 'Machine/web-1')`),
		chromedp.Click(chromedp.ID("verify")), waitFor(`document.getElementById('verify-result').className === 'ok'`))
	b.screenshot("audit")
	b.step("tallies", chromedp.Navigate(c.url+"/ui/#/tallies"), waitFor(`document.querySelector('#tally-chart rect[data-kind="provisioned"]') !== null`))
	b.screenshot("tallies")

	// The viewer: no buttons, and the API refuses the write anyway.
	b.step("sign out", chromedp.Navigate(c.url+"/ui/#/fleet"), chromedp.WaitVisible(chromedp.ID("logout")), chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("sso-login")))
	b.signIn(c.url, "victor")
	b.step("open web-1 as a viewer", chromedp.Navigate(c.url+"/ui/#/machine/web-1"), chromedp.WaitVisible(chromedp.CSS(`#timeline li`)))
	b.screenshot("viewer-machine")
	if n := eval[int](b, `document.querySelectorAll('#machine-actions button').length`); n != 0 {
		t.Errorf("a viewer sees %d power/reprovision buttons", n)
	}
	codes := eval[[]int](b, `(async () => {
		const s = await (await fetch('/ui/session')).json();
		const post = (headers) => fetch('/api/v1/machines/web-1/power', {method: 'POST', headers, body: '{"op":"off"}'}).then(r => r.status);
		return [await post({'Content-Type': 'application/json', 'X-Kiln-CSRF': s.csrf}), await post({'Content-Type': 'application/json'})];
	})()`)
	if len(codes) != 2 || codes[0] != http.StatusForbidden || codes[1] != http.StatusForbidden {
		t.Errorf("viewer's power-off from the page (with, without the CSRF token): %v, want [403 403]", codes)
	}
	if n := b.dialogs.Load(); n != 0 {
		t.Errorf("%d JavaScript dialogs opened", n)
	}
}

// TestConsoleRendersHostileTextAsText: names, labels, facts and timeline
// messages that carry HTML or JavaScript show as text and never run.
func TestConsoleRendersHostileTextAsText(t *testing.T) {
	c := startConsole(t)
	// The API refuses such a name, so the store is written behind its back (a
	// replica on an older version, a restored backup).
	if code := c.apiDo(t, "POST", "/api/v1/machines", `{"kind":"Machine","metadata":{"name":"<script>"},"spec":{}}`); code != http.StatusUnprocessableEntity {
		t.Errorf("API accepted a machine named <script>: %d", code)
	}
	ctx := context.Background()
	err := c.srv.Store().Update(ctx, func(tx store.Tx) error {
		obj := &resource.Object{APIVersion: resource.APIVersion, Kind: "Machine",
			Metadata: resource.Metadata{Name: xssMachine, Labels: map[string]string{"role": xssImg, "x": xssJSURL}},
			Spec:     json.RawMessage(`{"interfaces":[{"mac":"52:54:00:00:00:66","hostname":"` + strings.ReplaceAll(xssScript, `"`, `\"`) + `"}]}`)}
		return tx.Create(ctx, obj)
	})
	if err != nil {
		t.Fatalf("write the hostile machine: %v", err)
	}
	c.agentSays(t, xssMachine, resource.StateFailed, map[string]any{"hostname": xssScript, "vendor": xssImg, "url": xssJSURL},
		store.Event{Type: "DHCPAck", Message: "hostname " + xssScript},
		store.Event{Type: xssImg, Message: xssJSURL})
	b := newBrowserSession(t)
	b.signIn(c.url, "olga")
	b.step("fleet with the hostile machine", waitFor(`document.querySelectorAll('#machines tbody tr').length === 2`))
	b.screenshot("xss-fleet")
	if got := eval[string](b, `document.querySelector('#machines tbody').textContent`); !strings.Contains(got, xssMachine) || !strings.Contains(got, "role="+xssImg) {
		t.Errorf("the fleet does not show the name and label as text: %q", got)
	}
	b.step("open the hostile machine", chromedp.Click(chromedp.CSS(`#machines a[href*="evil"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline li`)))
	b.screenshot("xss-machine")
	// Each place shows the payload itself, as text: the facts, the labels, the
	// timeline's types and messages, the name.
	for sel, want := range map[string][]string{
		"#facts":        {xssScript, xssImg, xssJSURL},
		"#timeline":     {"hostname " + xssScript, xssImg, xssJSURL},
		"#machine-name": {xssMachine},
		"#main":         {"role=" + xssImg, "x=" + xssJSURL},
	} {
		got := eval[string](b, fmt.Sprintf(`document.querySelector(%q).textContent`, sel))
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s does not show %q as text: %q", sel, w, got)
			}
		}
	}
	noMarkup := `document.querySelectorAll('#main img, #main script, #main [onerror]').length + (window.__xss ? 100 : 0)`
	if n := eval[int](b, noMarkup); n != 0 {
		t.Errorf("hostile text on the machine page became markup or ran (%d)", n)
	}
	b.step("failed page", chromedp.Navigate(c.url+"/ui/#/failed"), waitFor(`document.querySelectorAll('#failed tbody tr').length === 1`))
	b.screenshot("xss-failed")
	if n := eval[int](b, noMarkup); n != 0 {
		t.Errorf("hostile text on the failed page became markup or ran (%d)", n)
	}
	if n := b.dialogs.Load(); n != 0 {
		t.Errorf("%d JavaScript dialogs opened: a payload ran", n)
	}
}

// TestConsoleFollowsEventStream: against a server that speaks the event
// stream's contract (GET /api/v1/machines?watch=1 as Server-Sent Events, ADDED
// and MODIFIED carrying the object as the list returns it), the fleet follows
// the stream (whose first messages are the list) instead of listing and polling: a machine appears and changes state as the
// messages arrive. The API here is a stand-in; the page is the real one.
func TestConsoleFollowsEventStream(t *testing.T) {
	h, err := ui.New()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	mux.HandleFunc("GET /ui/session", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"actor":"user:watcher@example.test","role":"viewer","csrf":"t"}`)
	})
	change := make(chan struct{})
	stop := make(chan struct{})
	var polls atomic.Int32
	machine := func(state string) string {
		return `{"apiVersion":"kiln.dev/v1","kind":"Machine","metadata":{"name":"stream-1","resourceVersion":"2"},"spec":{"interfaces":[{"mac":"52:54:00:00:00:99"}]},"status":{"state":"` + state + `"}}`
	}
	mux.HandleFunc("GET /api/v1/machines", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") != "1" {
			polls.Add(1)
			fmt.Fprint(w, `{"items":[]}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: 2\nevent: ADDED\ndata: %s\n\n", machine("new"))
		w.(http.Flusher).Flush()
		select {
		case <-change:
			fmt.Fprintf(w, "id: 3\nevent: MODIFIED\ndata: %s\n\n", machine("provisioning"))
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			return
		case <-stop:
			return
		}
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	})
	ts := httptest.NewServer(ui.SecurityHeaders(mux))
	t.Cleanup(ts.Close)
	t.Cleanup(func() { close(stop) })

	b := newBrowserSession(t)
	b.step("open the fleet", chromedp.Navigate(ts.URL+"/ui/#/fleet"),
		waitFor(`document.querySelector('tr[data-machine="stream-1"] .state-new') !== null`),
		waitFor(`document.getElementById('live').textContent === 'live: event stream'`))
	close(change)
	b.step("see the state change from the stream", waitFor(`document.querySelector('tr[data-machine="stream-1"] .state-provisioning') !== null`))
	b.screenshot("stream")
	if n := polls.Load(); n != 0 {
		t.Errorf("the fleet read the list %d times besides the stream, want none (the stream's first messages are the list)", n)
	}
}

// TestConsoleResumesAfterItsList: against the real Kiln API and event stream, a
// change made right after the console read what it shows (the fleet's list, a
// machine's timeline) and before its stream started still shows up (a machine
// deleted then is not left as a stale row, an event then is on the timeline): the fleet's
// list is the stream's own snapshot, and the machine's stream goes on from its
// timeline's resourceVersion. A proxy in front of Kiln makes the change the moment
// Kiln has answered the read, before the browser gets the answer.
func TestConsoleResumesAfterItsList(t *testing.T) {
	c := startConsole(t)
	target, err := url.Parse(c.url)
	if err != nil {
		t.Fatal(err)
	}
	var madeFleetGap, madeTimelineGap atomic.Bool
	var timelineVersion, streamVersion atomic.Value
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host // the console's writes must come from the origin they name
		},
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			req := resp.Request
			switch {
			case req.Method != http.MethodGet || resp.StatusCode != http.StatusOK:
			case req.URL.Path == "/api/v1/machines" && madeFleetGap.CompareAndSwap(false, true):
				if code := c.apiDo(t, "DELETE", "/api/v1/machines/gone-1", ""); code != http.StatusOK {
					t.Errorf("delete gone-1: %d", code)
				}
				if code := c.apiDo(t, "POST", "/api/v1/machines", `{"kind":"Machine","metadata":{"name":"gap-1"},"spec":{"profile":"p","interfaces":[{"mac":"52:54:00:00:00:77"}]}}`); code != http.StatusCreated {
					t.Errorf("create gap-1: %d", code)
				}
			case req.URL.Path == "/api/v1/machines/web-1/events" && req.URL.Query().Get("watch") == "":
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					return err
				}
				resp.Body = io.NopCloser(bytes.NewReader(body))
				var list struct{ ResourceVersion string }
				if err := json.Unmarshal(body, &list); err != nil {
					return err
				}
				if madeTimelineGap.CompareAndSwap(false, true) {
					timelineVersion.Store(list.ResourceVersion)
					c.agentSays(t, "web-1", resource.StateProvisioning, nil, store.Event{Type: "GapEvent", Message: "between the timeline and its stream"})
				}
			case req.URL.Path == "/api/v1/events" && req.URL.Query().Get("watch") == "1":
				streamVersion.CompareAndSwap(nil, req.URL.Query().Get("resourceVersion"))
			}
			return nil
		},
	}
	ts := httptest.NewServer(proxy)
	t.Cleanup(ts.Close)
	if code := c.apiDo(t, "POST", "/api/v1/machines", `{"kind":"Machine","metadata":{"name":"gone-1"},"spec":{"profile":"p","interfaces":[{"mac":"52:54:00:00:00:78"}]}}`); code != http.StatusCreated {
		t.Fatalf("create gone-1: %d", code)
	}

	b := newBrowserSession(t)
	b.step("sign in with an API token", chromedp.Navigate(ts.URL+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), c.admin), chromedp.Click(chromedp.CSS(`.login form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-machine="web-1"]`)))
	// gone-1 is deleted, then gap-1 created: once gap-1 shows, gone-1 must be gone.
	b.step("see gone-1 go and gap-1 appear, both changed after the fleet's list",
		waitFor(`document.querySelector('tr[data-machine="gap-1"]') !== null && document.querySelector('tr[data-machine="gone-1"]') === null`),
		waitFor(`document.getElementById('live').textContent === 'live: event stream'`))
	if !madeFleetGap.Load() {
		t.Fatal("the fleet read no list through the proxy")
	}
	b.step("open web-1", chromedp.Navigate(ts.URL+"/ui/#/machine/web-1"),
		waitFor(`document.querySelector('#timeline li[data-type="GapEvent"]') !== null`))
	b.screenshot("resumed")
	want, _ := timelineVersion.Load().(string)
	got, _ := streamVersion.Load().(string)
	if want == "" || got != want {
		t.Errorf("the machine's stream started at resourceVersion %q, want the timeline's %q", got, want)
	}
}
