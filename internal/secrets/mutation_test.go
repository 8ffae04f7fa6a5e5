package secrets

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/config"
	"github.com/kilnhq/kiln/internal/store"
)

// TestHandleAfterUseRecords: a handle used again is refused with an alert that
// says when it was first used; one requested after it expired is refused with a
// record of that; recording either logs no error.
func TestHandleAfterUseRecords(t *testing.T) {
	cases := []struct {
		name      string
		firstUse  bool
		advance   time.Duration
		action    string
		event     string
		summaryAt func(firstUsed time.Time) string
	}{
		{"used again", true, time.Second, "alert", "SecretHandleReused",
			func(firstUsed time.Time) string { return "first used at " + firstUsed.Format(time.RFC3339Nano) }},
		{"expired", false, DefaultHandleTTL + time.Second, "handle-expired", "SecretHandleExpired",
			func(time.Time) string { return "requested from" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newFleet(t)
			path := handleURL(t, e)
			firstUsed := e.clock.Now()
			if c.firstUse {
				if code, body := e.request("GET", path, nil, nil); code != 200 || string(body) != apiToken {
					t.Fatalf("first GET: %d", code)
				}
			}
			e.clock.Advance(c.advance)
			code, body := e.request("GET", path, nil, nil)
			if code != http.StatusGone || strings.Contains(string(body), apiToken) {
				t.Fatalf("GET %s: %d %s, want 410 without the value", c.name, code, body)
			}
			if n := countAudit(e.auditEntries(), c.action, c.summaryAt(firstUsed)); n != 1 {
				t.Errorf("%d %s audit entries saying %q, want 1: %+v", n, c.action, c.summaryAt(firstUsed), e.auditEntries())
			}
			if n := countEvents(e.events("web-1"), c.event); n != 1 {
				t.Errorf("%d %s events, want 1", n, c.event)
			}
			if logs := e.logs.String(); strings.Contains(logs, "level=ERROR") {
				t.Errorf("an error was logged: %s", logs)
			}
		})
	}
}

// TestFetchDeniedRecords: a machine asking over mTLS for a secret not released to
// it is refused, and the refusal is both audited and put on its timeline.
func TestFetchDeniedRecords(t *testing.T) {
	e := newFleet(t)
	if rel, err := e.svc.Fetch(context.Background(), "web-2", "api-token"); !errors.Is(err, ErrDenied) || rel != nil {
		t.Fatalf("Fetch by web-2: %v, want ErrDenied and nothing released", err)
	}
	if n := countAudit(e.auditEntries(), "deny", "denied secret api-token to machine web-2 via mtls"); n != 1 {
		t.Errorf("%d deny audit entries, want 1", n)
	}
	if n := countEvents(e.events("web-2"), "SecretDenied"); n != 1 {
		t.Errorf("%d SecretDenied events on web-2, want 1", n)
	}
}

// TestFetchReleasedAndOtherMachineRecords: a release over mTLS is on the
// machine's timeline; a machine asking for another's secret is audited and put
// on the other machine's timeline, and recording it logs no error.
func TestFetchReleasedAndOtherMachineRecords(t *testing.T) {
	e := newFleet(t)
	if rel, err := e.svc.Fetch(context.Background(), "web-1", "api-token"); err != nil || string(rel.Value) != apiToken {
		t.Fatalf("Fetch by web-1: %v", err)
	}
	if n := countEvents(e.events("web-1"), "SecretReleased"); n != 1 {
		t.Errorf("%d SecretReleased events on web-1, want 1", n)
	}
	e.svc.DenyOtherMachine(context.Background(), "web-2", "web-1", "secret api-token")
	if n := countAudit(e.auditEntries(), "deny", "machine web-2 (client certificate) asked for secret api-token of machine web-1: denied"); n != 1 {
		t.Errorf("%d deny audit entries for web-2's request, want 1", n)
	}
	if n := countEvents(e.events("web-1"), "AccessDenied"); n != 1 {
		t.Errorf("%d AccessDenied events on web-1, want 1", n)
	}
	if logs := e.logs.String(); strings.Contains(logs, "level=ERROR") {
		t.Errorf("an error was logged: %s", logs)
	}
}

// TestSecretAuditLimit: a secret's audit listing takes limits up to 100000 (0 or
// none: the default page) and refuses more, or a negative or malformed one,
// with 400; a limit returns that many entries.
func TestSecretAuditLimit(t *testing.T) {
	e := newFleet(t)
	e.set("db-password", "second value") // three entries: create, two values
	cases := []struct {
		query string
		want  int
		items int // -1: not checked
	}{
		{"", 200, 3},
		{"?limit=0", 200, 3},
		{"?limit=1", 200, 1},
		{"?limit=100000", 200, 3},
		{"?limit=100001", 400, -1},
		{"?limit=-1", 400, -1},
		{"?limit=x", 400, -1},
		{"?after=x", 400, -1},
	}
	for _, c := range cases {
		code, body := e.request("GET", "/api/v1/secrets/db-password/audit"+c.query, nil, asRole("viewer"))
		if code != c.want {
			t.Errorf("audit%s: %d %s, want %d", c.query, code, body, c.want)
			continue
		}
		var al AuditList
		if c.items >= 0 && (json.Unmarshal(body, &al) != nil || len(al.Items) != c.items) {
			t.Errorf("audit%s: %s, want %d entries", c.query, body, c.items)
		}
	}
}

// TestRenderPreviewFileByName: the render preview of a file config takes the
// file's name from part or, without part, from name; secrets are masked.
func TestRenderPreviewFileByName(t *testing.T) {
	e := newFleet(t)
	for _, q := range []string{"kind=file&part=ks.cfg", "kind=file&name=ks.cfg"} {
		code, body := e.request("GET", "/api/v1/render/web-1?"+q, nil, asRole("operator"))
		b := string(body)
		if code != 200 || !strings.Contains(b, "rootpw --iscrypted") ||
			strings.Contains(b, dbPassword) || strings.Contains(b, base64.StdEncoding.EncodeToString([]byte(dbPassword))) {
			t.Errorf("render ?%s: %d %s", q, code, body)
		}
	}
}

// TestIssueHandleTTL: IssueHandle's ttl 0 means the service's default handle TTL, a
// given ttl is used as it is up to and including the maximum, and a negative or
// longer one is refused as bad input with no handle issued.
func TestIssueHandleTTL(t *testing.T) {
	e := newFleet(t)
	e.svc.HandleTTL, e.svc.MaxHandleTTL = 7*time.Minute, time.Hour
	cases := []struct {
		ttl, want time.Duration
		ok        bool
	}{
		{0, 7 * time.Minute, true},
		{90 * time.Second, 90 * time.Second, true},
		{time.Hour, time.Hour, true},
		{time.Hour + time.Nanosecond, 0, false},
		{-time.Second, 0, false},
	}
	for _, c := range cases {
		before := countAudit(e.auditEntries(), "issue-handle", "")
		u, exp, err := e.svc.IssueHandle(context.Background(), "token:admin", "web-1", "api-token", "cmdline", c.ttl, "https://kiln.test:8443")
		issued := countAudit(e.auditEntries(), "issue-handle", "") - before
		if !c.ok {
			var ie *InputError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), "TTL") || u != "" || issued != 0 {
				t.Errorf("ttl %s: %q %v, %d handles issued; want an InputError naming the TTL and none", c.ttl, u, err, issued)
			}
			continue
		}
		if err != nil || !exp.Equal(e.clock.Now().Add(c.want)) || !strings.HasPrefix(u, "https://") || !strings.Contains(u, "/secret-handles/") || issued != 1 {
			t.Errorf("ttl %s: %q expires %v (%v), %d issued; want now + %s", c.ttl, u, exp, err, issued, c.want)
		}
	}
}

// TestHandleBaseFromRequest: with neither a handle URL nor a public URL
// configured, a config's handle URLs take the base the machine reached Kiln by
// when that was HTTPS; over plain HTTP there is no https base, and the config is
// refused rather than given an http:// handle.
func TestHandleBaseFromRequest(t *testing.T) {
	e := newFleet(t)
	e.svc.HandleURL, e.svc.PublicURL = "", ""
	code, body := e.request("GET", "/config/ignition", nil, asMachine("web-1"))
	if code != http.StatusOK || !strings.Contains(string(body), e.http.URL+"/secret-handles/") {
		t.Fatalf("config over HTTPS: %d, want handle URLs under %s:\n%s", code, e.http.URL, body)
	}
	plain := httptest.NewServer(e.mux)
	defer plain.Close()
	req, err := http.NewRequest("GET", plain.URL+"/config/ignition", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test-Machine", "web-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || strings.Contains(string(b), "/secret-handles/") {
		t.Fatalf("config over plain HTTP without an https URL: %d %s, want a refusal without a handle", resp.StatusCode, b)
	}
}

// TestRenderTemplateData: what a template sees of its machine: the first
// interface's MAC, address and host name (none without interfaces), the machine's
// and the profile's labels, and the names of the profile's secrets the machine may
// receive (only those), its reported facts. spec.configs.public, like the label, lets a profile's
// configs be served over plain HTTP.
func TestRenderTemplateData(t *testing.T) {
	e := newFleet(t)
	e.apply(`
kind: Profile
metadata:
  name: data
  labels: {tier: gold}
spec:
  boot: {kernel: vmlinuz}
  secrets: [db-password, api-token]
  configs:
    public: true
    files:
      data.txt: "{{ .Machine.Name }}|{{ .Machine.MAC }}|{{ .Machine.IP }}|{{ .Machine.Hostname }}|{{ index .Machine.Labels \"role\" }}|{{ index .Profile.Labels \"tier\" }}|{{ .Secrets }}|{{ len .Machine.Facts }}"
---
kind: Machine
metadata:
  name: d-1
  labels: {role: web}
spec:
  profile: data
  interfaces: [{mac: "52:54:00:00:00:09", ip: 10.0.0.19, hostname: d-one}, {mac: "52:54:00:00:00:0a", ip: 10.0.0.20, hostname: d-two}]
---
kind: Machine
metadata: {name: d-2}
spec:
  profile: data
`)
	e.setFacts("d-1", map[string]any{"cpus": 4})
	for _, c := range []struct{ machine, want string }{
		{"d-1", "d-1|52:54:00:00:00:09|10.0.0.19|d-one|web|gold|[api-token]|1"},
		{"d-2", "d-2|||||gold|[]|0"},
	} {
		out, err := render(e, c.machine, config.Target{Kind: config.KindFile, Part: "data.txt"}, ModePublic)
		if err != nil || string(out.Content) != c.want {
			t.Errorf("%s: %q (%v), want %q", c.machine, outContent(out), err, c.want)
		}
	}
}

func outContent(r *Rendered) string {
	if r == nil {
		return ""
	}
	return string(r.Content)
}

// TestSecretURLTTLLimit: a template's secretURL TTL may be the service's maximum
// but not longer.
func TestSecretURLTTLLimit(t *testing.T) {
	e := newFleet(t)
	e.apply(`
kind: Profile
metadata: {name: urls}
spec:
  boot: {kernel: vmlinuz}
  secrets: [api-token]
  configs:
    files:
      at-max.txt: '{{ secretURL "api-token" "1h" }}'
      past-max.txt: '{{ secretURL "api-token" "61m" }}'
---
kind: Machine
metadata:
  name: u-1
  labels: {role: web}
spec:
  profile: urls
`)
	out, err := render(e, "u-1", config.Target{Kind: config.KindFile, Part: "at-max.txt"}, ModeDeliver)
	if err != nil || !strings.Contains(string(out.Content), "/secret-handles/") {
		t.Fatalf("secretURL with the maximum TTL: %q %v", outContent(out), err)
	}
	_, err = render(e, "u-1", config.Target{Kind: config.KindFile, Part: "past-max.txt"}, ModeDeliver)
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "longer than the limit") {
		t.Fatalf("secretURL past the maximum TTL: %v, want an InputError", err)
	}
}

// TestDefaultMetaData: a profile with cloud-init parts but no meta-data gets
// Kiln's: the host name is the first interface's that has one, else the
// machine's name.
func TestDefaultMetaData(t *testing.T) {
	e := newFleet(t)
	e.apply(`
kind: Profile
metadata: {name: ci}
spec:
  boot: {kernel: vmlinuz}
  configs:
    cloudInit: {user-data: "#cloud-config\n"}
---
kind: Machine
metadata: {name: c-1}
spec:
  profile: ci
  interfaces: [{mac: "52:54:00:00:01:01"}, {mac: "52:54:00:00:01:02", hostname: c-one}]
---
kind: Machine
metadata: {name: c-2}
spec:
  profile: ci
  interfaces: [{mac: "52:54:00:00:01:03"}]
`)
	for machine, want := range map[string]string{
		"c-1": "instance-id: kiln-c-1\nlocal-hostname: c-one\n",
		"c-2": "instance-id: kiln-c-2\nlocal-hostname: c-2\n",
	} {
		out, err := render(e, machine, config.Target{Kind: config.KindCloudInit, Part: "meta-data"}, ModeDeliver)
		if err != nil || string(out.Content) != want {
			t.Errorf("%s meta-data %q (%v), want %q", machine, outContent(out), err, want)
		}
	}
}

// TestServerWithoutActorOrLogger: a Server given no Actor records operator writes
// as "anonymous", and one given no Logger still serves the requests that log.
func TestServerWithoutActorOrLogger(t *testing.T) {
	e := newFleet(t)
	srv := &Server{Service: e.svc, Identity: headerIdentity}
	mux := http.NewServeMux()
	srv.RegisterOperator(testRegister(mux))
	srv.RegisterAgent(mux, nil)
	hs := httptest.NewTLSServer(mux)
	defer hs.Close()
	do := func(method, path, body string, headers map[string]string) int {
		req, err := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	value := base64.StdEncoding.EncodeToString([]byte("s3cret"))
	if code := do("PUT", "/api/v1/secrets/new-one/value", `{"value": "`+value+`"}`, asRole("operator")); code != http.StatusOK {
		t.Fatalf("set: %d", code)
	}
	found := false
	for _, a := range e.auditEntries() {
		if a.Name == "new-one" && a.Actor == "anonymous" {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit entry by anonymous for the write: %+v", e.auditEntries())
	}
	// Asking for another machine's config logs a warning.
	if code := do("GET", "/config/ignition?machine=web-2", "", asMachine("web-1")); code != http.StatusForbidden {
		t.Errorf("another machine's config: %d, want 403", code)
	}
}

// TestDeliveryPurgesOnlyOldHandles: serving a config purges handles that expired
// more than the retention ago (they only served late 410s), and no others: a
// handle issued by an earlier config stays redeemable.
func TestDeliveryPurgesOnlyOldHandles(t *testing.T) {
	e := newFleet(t)
	first := handleURL(t, e)
	second := handleURL(t, e) // a second delivery: purges
	if code, body := e.request("GET", first, nil, nil); code != http.StatusOK || string(body) != apiToken {
		t.Fatalf("first handle after another delivery: %d, want 200 with the value", code)
	}
	e.clock.Advance(DefaultHandleTTL + time.Minute)
	handleURL(t, e)
	if code, _ := e.request("GET", second, nil, nil); code != http.StatusGone {
		t.Fatalf("expired handle within the retention: %d, want 410", code)
	}
	e.clock.Advance(DefaultHandleRetention)
	handleURL(t, e)
	if code, _ := e.request("GET", second, nil, nil); code != http.StatusNotFound {
		t.Fatalf("handle expired longer than the retention ago: %d, want 404 (purged)", code)
	}
}

// TestConfigServedEvent: the timeline event of a served config lists the secrets
// it carried, and says nothing of secrets when it carried none.
func TestConfigServedEvent(t *testing.T) {
	e := newFleet(t)
	if _, err := render(e, "pub-1", tIgnition, ModeDeliver); err != nil {
		t.Fatal(err)
	}
	if _, err := render(e, "web-1", tIgnition, ModeDeliver); err != nil {
		t.Fatal(err)
	}
	for machine, want := range map[string]string{
		"pub-1": "served ignition config over mtls",
		"web-1": "served ignition config over mtls with secrets: db-password v1 inline, api-token v1 handle",
	} {
		var got []string
		for _, ev := range e.events(machine) {
			if ev.Type == "ConfigServed" {
				got = append(got, ev.Message)
			}
		}
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s: ConfigServed events %q, want [%q]", machine, got, want)
		}
	}
}

// TestRenderFailureRecorded: a render refused for a secret the machine may not
// have is on its timeline and in the audit, and recording it is no warning.
func TestRenderFailureRecorded(t *testing.T) {
	e := newFleet(t)
	if _, err := render(e, "web-2", tIgnition, ModeDeliver); !errors.Is(err, ErrDenied) {
		t.Fatalf("web-2's ignition: %v, want ErrDenied", err)
	}
	if n := countEvents(e.events("web-2"), "ConfigRenderFailed"); n != 1 {
		t.Errorf("%d ConfigRenderFailed events, want 1", n)
	}
	if n := countAudit(e.auditEntries(), "deny", "to machine web-2"); n != 1 {
		t.Errorf("%d deny audit entries, want 1", n)
	}
	if logs := e.logs.String(); strings.Contains(logs, "record a failed render") {
		t.Errorf("recording the failure logged a warning:\n%s", logs)
	}
}

// TestFailedRotationNextKeyGone: a failed rotation whose next key file is already
// gone has nothing to clean up, and says nothing about it.
func TestFailedRotationNextKeyGone(t *testing.T) {
	e := newFleet(t)
	e.svc.RotationHooks = []RotationHook{func(context.Context, store.Tx, []byte, []byte) (func(), error) {
		if err := os.Remove(e.kekPath + ".new"); err != nil {
			t.Error(err)
		}
		return nil, errors.New("CA key busy")
	}}
	if _, err := e.svc.RotateKEK(context.Background(), admin); err == nil || !strings.Contains(err.Error(), "CA key busy") {
		t.Fatalf("rotation with a failing hook: %v", err)
	}
	if logs := e.logs.String(); strings.Contains(logs, "remove the unused next key file") {
		t.Errorf("a warning about a file that was already gone:\n%s", logs)
	}
}

// TestStartRemovesUnusedOldKey: a kek.key.old left by a rotation that stopped
// after replacing the key file (before removing the previous key) is removed at
// the next start when no stored version needs it.
func TestStartRemovesUnusedOldKey(t *testing.T) {
	e := newFleet(t)
	oldKey, err := os.ReadFile(e.kekPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RotateKEK(context.Background(), admin); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.kekPath+".old", oldKey, 0o600); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if _, err := os.Stat(e.kekPath + ".old"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("kek.key.old left after the start: %v", err)
	}
	if got, _, err := e.svc.Reveal(context.Background(), admin, "db-password", 0); err != nil || string(got) != dbPassword {
		t.Fatalf("reveal after the start: %v", err)
	}
}

// TestSetKeepsOtherStatus: a new version updates the Secret's status.version and
// keeps whatever else its status holds.
func TestSetKeepsOtherStatus(t *testing.T) {
	e := newFleet(t)
	err := e.store.Update(context.Background(), func(tx store.Tx) error {
		obj, err := tx.Get(context.Background(), "Secret", "db-password")
		if err != nil {
			return err
		}
		obj.Status = []byte(`{"version": 1, "note": "kept"}`)
		return tx.Update(context.Background(), obj)
	})
	if err != nil {
		t.Fatal(err)
	}
	e.set("db-password", "second")
	obj, err := e.inv.Get(context.Background(), "Secret", "db-password")
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(obj.Status, &st); err != nil || st["note"] != "kept" || st["version"] != float64(2) {
		t.Errorf("status %s (%v), want version 2 and the note kept", obj.Status, err)
	}
}

// TestRevealMissingVersions: revealing a secret that has no value yet says so; a
// version that does not exist of a secret that has values is only not found.
func TestRevealMissingVersions(t *testing.T) {
	e := newFleet(t)
	e.apply("kind: Secret\nmetadata: {name: empty}\nspec: {machines: [web-1]}\n")
	_, _, err := e.svc.Reveal(context.Background(), admin, "empty", 0)
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "has no value yet") {
		t.Errorf("reveal of a secret without a value: %v", err)
	}
	_, _, err = e.svc.Reveal(context.Background(), admin, "db-password", 9)
	if !errors.Is(err, store.ErrNotFound) || strings.Contains(err.Error(), "has no value yet") {
		t.Errorf("reveal of a missing version: %v, want not found without \"has no value yet\"", err)
	}
}

// TestDeleteAudited: deleting a secret removes it with its versions and leaves one
// audit entry that counts them.
func TestDeleteAudited(t *testing.T) {
	e := newFleet(t)
	e.apply("kind: Secret\nmetadata: {name: gone}\nspec: {machines: [web-1]}\n")
	e.set("gone", "one")
	e.set("gone", "two")
	if err := e.svc.Delete(context.Background(), admin, "gone"); err != nil {
		t.Fatal(err)
	}
	if n := countAudit(e.auditEntries(), "delete", "deleted with its 2 versions"); n != 1 {
		t.Errorf("%d delete audit entries counting 2 versions, want 1: %+v", n, e.auditEntries())
	}
	if _, _, err := e.svc.Reveal(context.Background(), admin, "gone", 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reveal after delete: %v", err)
	}
}
