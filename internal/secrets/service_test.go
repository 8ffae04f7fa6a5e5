package secrets

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/config"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

func TestSetVersionsAndReveal(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v1 := e.set("db", "one")
	v2 := e.set("db", "two")
	if v1.Version != 1 || v2.Version != 2 || v2.KEKID != e.svc.Keys.CurrentID() {
		t.Fatalf("versions %+v %+v", v1, v2)
	}
	obj, err := e.inv.Get(ctx, "Secret", "db")
	if err != nil {
		t.Fatal(err)
	}
	if string(obj.Spec) != "{}" || !strings.Contains(string(obj.Status), `"version":2`) {
		t.Fatalf("secret object: spec %s status %s", obj.Spec, obj.Status)
	}
	for _, tc := range []struct {
		version int64
		want    string
	}{{0, "two"}, {1, "one"}, {2, "two"}} {
		got, vi, err := e.svc.Reveal(ctx, admin, "db", tc.version)
		if err != nil || string(got) != tc.want {
			t.Fatalf("reveal version %d: %q %+v %v", tc.version, got, vi, err)
		}
	}
	if _, _, err := e.svc.Reveal(ctx, admin, "db", 3); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("reveal a missing version: %v", err)
	}
	vs, err := e.svc.Versions(ctx, "db")
	if err != nil || len(vs) != 2 || vs[1].Version != 2 || vs[0].CreatedBy != admin.ID {
		t.Fatalf("versions: %+v %v", vs, err)
	}
	entries := e.auditEntries()
	if countAudit(entries, "create", "no release rules") != 1 || countAudit(entries, "set-value", "stored version") != 2 ||
		countAudit(entries, "reveal", "revealed version") != 3 {
		t.Fatalf("audit: %+v", entries)
	}
}

func TestSetRefusesBadInput(t *testing.T) {
	e := newEnv(t)
	e.svc.MaxValueBytes = 16
	var ie *InputError
	for _, tc := range []struct {
		name, secret, value string
		check               func(error) bool
	}{
		{"bad name", "Not_A_Name", "x", func(err error) bool { return errors.As(err, &ie) }},
		{"empty name", "", "x", func(err error) bool { return errors.As(err, &ie) }},
		{"empty value", "db", "", func(err error) bool { return errors.As(err, &ie) }},
		{"too large", "db", strings.Repeat("x", 17), func(err error) bool { return errors.Is(err, ErrTooLarge) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.Set(context.Background(), admin, tc.secret, []byte(tc.value))
			if err == nil || !tc.check(err) {
				t.Fatalf("got %v", err)
			}
			if strings.Contains(err.Error(), "xxxxxxxx") {
				t.Fatalf("the error quotes the value: %v", err)
			}
		})
	}
	if _, err := e.inv.Get(context.Background(), "Secret", "db"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused set left a secret behind: %v", err)
	}
	e.set("db", strings.Repeat("y", 16)) // exactly the limit
}

func TestDeleteRefusedWhileReferenced(t *testing.T) {
	e := newFleet(t)
	ctx := context.Background()
	var ie *InputError
	err := e.svc.Delete(ctx, admin, "db-password")
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), `profile "public" still refers to it`) && !strings.Contains(err.Error(), `profile "web" still refers to it`) {
		t.Fatalf("delete a referenced secret: %v", err)
	}
	e.set("loose", "v")
	if err := e.svc.Delete(ctx, admin, "loose"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.inv.Get(ctx, "Secret", "loose"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("object after delete: %v", err)
	}
	err = e.store.View(ctx, func(tx store.Tx) error {
		vs, err := tx.ListSecretVersions(ctx, "loose")
		if len(vs) != 0 {
			t.Errorf("versions after delete: %d", len(vs))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(ctx, admin, "loose"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	// Set again: a fresh secret starts at version 1.
	if vi := e.set("loose", "w"); vi.Version != 1 {
		t.Fatalf("version after delete and set: %d", vi.Version)
	}
}

func TestAllowed(t *testing.T) {
	machine := func(name string, labels map[string]string, facts string) *resource.Object {
		o := &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: name, Labels: labels}}
		if facts != "" {
			o.Status = json.RawMessage(`{"facts":` + facts + `}`)
		}
		return o
	}
	for _, tc := range []struct {
		name string
		spec resource.SecretSpec
		m    *resource.Object
		want bool
	}{
		{"no rules", resource.SecretSpec{}, machine("a", map[string]string{"role": "db"}, ""), false},
		{"by name", resource.SecretSpec{Machines: []string{"b", "a"}}, machine("a", nil, ""), true},
		{"other name", resource.SecretSpec{Machines: []string{"b"}}, machine("a", nil, ""), false},
		{"labels match", resource.SecretSpec{Labels: map[string]string{"role": "db", "env": "prod"}}, machine("a", map[string]string{"role": "db", "env": "prod", "x": "y"}, ""), true},
		{"one label missing", resource.SecretSpec{Labels: map[string]string{"role": "db", "env": "prod"}}, machine("a", map[string]string{"role": "db"}, ""), false},
		{"label value differs", resource.SecretSpec{Labels: map[string]string{"role": "db"}}, machine("a", map[string]string{"role": "web"}, ""), false},
		{"fact is not a label", resource.SecretSpec{Labels: map[string]string{"role": "db"}}, machine("a", nil, `{"role":"db","labels":{"role":"db"}}`), false},
		{"name or labels", resource.SecretSpec{Machines: []string{"z"}, Labels: map[string]string{"role": "db"}}, machine("a", map[string]string{"role": "db"}, ""), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Allowed(&tc.spec, tc.m); got != tc.want {
				t.Fatalf("Allowed = %v, want %v", got, tc.want)
			}
		})
	}
}

func render(e *env, machine string, target config.Target, mode Mode) (*Rendered, error) {
	return e.svc.Render(context.Background(), RenderRequest{Machine: machine, Target: target, Mode: mode, BaseURL: "https://kiln.test:8443", Actor: "machine:" + machine})
}

var (
	tIgnition = config.Target{Kind: config.KindIgnition}
	tUserData = config.Target{Kind: config.KindCloudInit, Part: "user-data"}
	tMetaData = config.Target{Kind: config.KindCloudInit, Part: "meta-data"}
	tNetwork  = config.Target{Kind: config.KindCloudInit, Part: "network-config"}
	tVendor   = config.Target{Kind: config.KindCloudInit, Part: "vendor-data"}
	tKS       = config.Target{Kind: config.KindFile, Part: "ks.cfg"}
)

func TestRenderDeliverInlinesAndAudits(t *testing.T) {
	e := newFleet(t)
	out, err := render(e, "web-1", tIgnition, ModeDeliver)
	if err != nil {
		t.Fatal(err)
	}
	if err := config.ValidateIgnition(out.Content); err != nil {
		t.Fatalf("served ignition does not validate: %v", err)
	}
	wantData := "data:;base64," + base64.StdEncoding.EncodeToString([]byte(dbPassword))
	if !strings.Contains(string(out.Content), wantData) {
		t.Fatalf("ignition lacks the inlined secret:\n%s", out.Content)
	}
	if !strings.Contains(string(out.Content), e.http.URL+"/secret-handles/") {
		t.Fatalf("ignition lacks the handle URL:\n%s", out.Content)
	}
	if len(out.Releases) != 2 || out.Releases[0].Via != "inline" || out.Releases[1].Via != "handle" {
		t.Fatalf("releases: %+v", out.Releases)
	}
	entries := e.auditEntries()
	if countAudit(entries, "release", "released secret db-password v1 to machine web-1 via mtls (ignition config)") != 1 ||
		countAudit(entries, "issue-handle", "secret api-token v1 to machine web-1 via mtls") != 1 {
		t.Fatalf("audit: %+v", entries)
	}
	if evs := e.events("web-1"); countEvents(evs, "ConfigServed") != 1 {
		t.Fatalf("events: %+v", evs)
	}
	// Every part of cloud-init and the generic file.
	for _, tc := range []struct {
		target config.Target
		want   string
	}{
		{tUserData, `content: "` + dbPassword + `"`},
		{tMetaData, "instance-id: kiln-web-1\nlocal-hostname: web-1\n"},
		{tNetwork, "dhcp4: true"},
		{tVendor, ""},
		{tKS, "rootpw --iscrypted " + base64.StdEncoding.EncodeToString([]byte(dbPassword))},
	} {
		out, err := render(e, "web-1", tc.target, ModeDeliver)
		if err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		if !strings.Contains(string(out.Content), tc.want) {
			t.Fatalf("%s: want %q in\n%s", tc.target, tc.want, out.Content)
		}
	}
}

func TestRenderFailsClosed(t *testing.T) {
	e := newFleet(t)
	// web-2 is in no release rule of db-password.
	_, err := render(e, "web-2", tIgnition, ModeDeliver)
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), `secret "db-password"`) || !strings.Contains(err.Error(), `machine "web-2"`) {
		t.Fatalf("render for a machine the secret is not released to: %v", err)
	}
	entries := e.auditEntries()
	if countAudit(entries, "deny", "denied secret db-password to machine web-2") != 1 || countAudit(entries, "release", "web-2") != 0 {
		t.Fatalf("audit: %+v", entries)
	}
	if evs := e.events("web-2"); countEvents(evs, "ConfigRenderFailed") != 1 {
		t.Fatalf("events: %+v", evs)
	}
	// The preview fails the same way: it shows what the machine would get.
	if _, err := render(e, "web-2", tIgnition, ModePreview); !errors.Is(err, ErrDenied) {
		t.Fatalf("preview: %v", err)
	}
}

func TestFactLabelDoesNotUnlockOperatorLabelDoes(t *testing.T) {
	e := newFleet(t)
	// api-token goes to role=web. web-2 reports role=web as a fact, and even a
	// "labels" fact: neither counts.
	e.setFacts("web-2", map[string]any{"role": "web", "labels": map[string]any{"role": "web"}})
	if _, err := e.svc.Fetch(context.Background(), "web-2", "api-token"); !errors.Is(err, ErrDenied) {
		t.Fatalf("a fact unlocked the secret: %v", err)
	}
	// The operator sets the label: now it does.
	e.setLabels("web-2", map[string]string{"role": "web"})
	rel, err := e.svc.Fetch(context.Background(), "web-2", "api-token")
	if err != nil || string(rel.Value) != apiToken {
		t.Fatalf("after the operator's label: %v", err)
	}
	entries := e.auditEntries()
	if countAudit(entries, "deny", "denied secret api-token to machine web-2") != 1 ||
		countAudit(entries, "release", "released secret api-token v1 to machine web-2 via mtls") != 1 {
		t.Fatalf("audit: %+v", entries)
	}
}

func TestRenderBadInput(t *testing.T) {
	e := newFleet(t)
	ctx := context.Background()
	setTemplate := func(tmpl string) {
		t.Helper()
		obj, err := e.inv.Get(ctx, "Profile", "web")
		if err != nil {
			t.Fatal(err)
		}
		var spec map[string]any
		if err := json.Unmarshal(obj.Spec, &spec); err != nil {
			t.Fatal(err)
		}
		spec["configs"].(map[string]any)["ignition"] = tmpl
		obj.Spec, _ = json.Marshal(spec)
		if _, err := e.inv.Update(ctx, admin, obj); err != nil {
			t.Fatal(err)
		}
	}
	e.set("unlisted", "v")
	var re *RenderError
	var ie *InputError
	for _, tc := range []struct {
		name, tmpl string
		check      func(error) bool
		want       string
	}{
		{"parse error", `{{ .Machine.Name `, func(err error) bool { return errors.As(err, &re) }, "spec.configs.ignition"},
		{"unknown function", `{{ nosuch }}`, func(err error) bool { return errors.As(err, &re) }, `function "nosuch" not defined`},
		{"missing key", `{{ .Machine.Nope }}`, func(err error) bool { return errors.As(err, &re) }, "Nope"},
		{"not ignition", `{"hello": 1}`, func(err error) bool { return errors.As(err, &re) }, "does not validate"},
		{"bad version", `{"ignition": {"version": "9.9.9"}}`, func(err error) bool { return errors.As(err, &re) }, "does not validate"},
		{"missing secret", `{{ secret "nope" }}`, func(err error) bool { return errors.As(err, &ie) }, `secret "nope" is not listed in spec.secrets of profile "web"`},
		{"secret not in profile", `{{ secret "unlisted" }}`, func(err error) bool { return errors.As(err, &ie) }, `"unlisted" is not listed`},
		{"bad ttl", `{{ secretURL "api-token" "soon" }}`, func(err error) bool { return errors.As(err, &re) }, `TTL "soon"`},
		{"ttl too long", `{{ secretURL "api-token" "100h" }}`, func(err error) bool { return errors.As(err, &ie) }, "longer than the limit"},
		{"unquoted value", `{"ignition": {"version": "3.3.0"}, "x": {{ secret "db-password" }}}`,
			func(err error) bool { return errors.As(err, &re) }, "invalid character 'M'"},
		{"masked also invalid", `{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "relative", "contents": {"source": {{ secret "db-password" | dataURL | toJson }}}}]}}`,
			func(err error) bool { return errors.As(err, &re) }, "path not absolute"},
		{"range over a value", `{{ range secret "db-password" }}{{ end }}`, func(err error) bool { return errors.As(err, &re) }, "MASKED-SECRET-db-password-v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setTemplate(tc.tmpl)
			out, err := render(e, "web-1", tIgnition, ModeDeliver)
			if err == nil || !tc.check(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (%T), output %v; want an error with %q", err, err, out, tc.want)
			}
			if strings.Contains(err.Error(), dbPassword) || strings.Contains(err.Error(), dbPassword[:12]) {
				t.Fatalf("the error quotes the value: %v", err)
			}
			if statusFor(err) == 500 {
				t.Fatalf("maps to 500: %v", err)
			}
		})
	}
	// A value that breaks the format only when it is real: the message is generic.
	e.set("db-password", `quote" and \ backslash`)
	setTemplate(`{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/x", "contents": {"source": "data:,{{ secret "db-password" }}"}}]}}`)
	_, err := render(e, "web-1", tIgnition, ModeDeliver)
	if !errors.Is(err, errValueBreaksFormat) || strings.Contains(err.Error(), "backslash") {
		t.Fatalf("a value that breaks JSON: %v", err)
	}
	// Nothing was released by any of them.
	if n := countAudit(e.auditEntries(), "release", ""); n != 0 {
		t.Fatalf("%d releases from failed renders", n)
	}
	if n := countAudit(e.auditEntries(), "issue-handle", ""); n != 0 {
		t.Fatalf("%d handles from failed renders", n)
	}
}

func TestRenderMissingConfigAndMachine(t *testing.T) {
	e := newFleet(t)
	for _, tc := range []struct {
		machine string
		target  config.Target
		want    string
	}{
		{"nope", tIgnition, `machine "nope" does not exist`},
		{"pub-1", tUserData, `profile "public" has no spec.configs.cloudInit.user-data`},
		{"web-1", config.Target{Kind: config.KindFile, Part: "preseed.cfg"}, "spec.configs.files.preseed.cfg"},
	} {
		_, err := render(e, tc.machine, tc.target, ModeDeliver)
		if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s %s: %v", tc.machine, tc.target, err)
		}
	}
}

func TestRenderPublic(t *testing.T) {
	e := newFleet(t)
	// A profile that does not allow plain HTTP.
	if _, err := render(e, "web-1", tIgnition, ModePublic); !errors.Is(err, ErrNotPublic) {
		t.Fatalf("public render of a private profile: %v", err)
	}
	// Allowed, and no secret: served.
	out, err := render(e, "pub-1", tIgnition, ModePublic)
	if err != nil || !strings.Contains(string(out.Content), "data:,pub-1") || !out.Public {
		t.Fatalf("public ignition: %v", err)
	}
	// Allowed, but the config refers to a secret: refused, whatever the release rules.
	e.apply("kind: Secret\nmetadata: {name: db-password}\nspec: {machines: [web-1, pub-1]}\n")
	if _, err := render(e, "pub-1", config.Target{Kind: config.KindFile, Part: "leaky.cfg"}, ModePublic); !errors.Is(err, ErrNotPublic) {
		t.Fatalf("public render with a secret: %v", err)
	}
	// Over mTLS the same file is fine.
	if out, err := render(e, "pub-1", config.Target{Kind: config.KindFile, Part: "leaky.cfg"}, ModeDeliver); err != nil || string(out.Content) != "pw="+dbPassword {
		t.Fatalf("mtls render: %v", err)
	}
}

func TestRenderPreviewMasks(t *testing.T) {
	e := newFleet(t)
	out, err := render(e, "web-1", tIgnition, ModePreview)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out.Content)
	if strings.Contains(s, dbPassword) || !strings.Contains(s, base64.StdEncoding.EncodeToString([]byte("MASKED-SECRET-db-password-v1"))) ||
		!strings.Contains(s, "/secret-handles/MASKED-HANDLE-api-token") {
		t.Fatalf("preview:\n%s", s)
	}
	if err := config.ValidateIgnition(out.Content); err != nil {
		t.Fatalf("masked ignition does not validate: %v", err)
	}
	entries := e.auditEntries()
	if countAudit(entries, "release", "") != 0 || countAudit(entries, "issue-handle", "") != 0 {
		t.Fatalf("a preview released something: %+v", entries)
	}
}
