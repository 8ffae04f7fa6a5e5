package config

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
)

// fakeSecrets resolves "db" and refuses anything else.
type fakeSecrets struct{}

var errNope = errors.New("not released")

func (fakeSecrets) Value(name string) (string, error) {
	if name == "db" {
		return "pa\"ss\nword", nil
	}
	return "", fmt.Errorf("secret %q: %w", name, errNope)
}

func (fakeSecrets) URL(name string, ttl time.Duration) (string, error) {
	if name == "db" {
		return fmt.Sprintf("http://kiln/secret-handles/%s-%s", name, ttl), nil
	}
	return "", fmt.Errorf("secret %q: %w", name, errNope)
}

var data = Data{
	Machine: Machine{Name: "web-1", Labels: map[string]string{"role": "web"}, MAC: "52:54:00:00:00:01",
		Facts: map[string]any{"disks": []any{"sda", "sdb"}}},
	Profile:   Profile{Name: "web", Labels: map[string]string{}},
	ServerURL: "http://kiln:8080",
	Secrets:   []string{"db"},
}

func TestFuncs(t *testing.T) {
	file := Target{Kind: KindFile, Part: "x"}
	for _, tc := range []struct{ tmpl, want string }{
		{`{{ .Machine.Name }}`, "web-1"},
		{`{{ .Machine.Labels.role }}`, "web"},
		{`{{ index .Machine.Labels "nope" }}`, ""},
		{`{{ join "," .Machine.Facts.disks }}`, "sda,sdb"},
		{`{{ join "," .Secrets }}`, "db"},
		{`{{ secret "db" | toJson }}`, `"pa\"ss\nword"`},
		{`{{ "<&>" | toJson }}`, `"<&>"`},
		{`{{ .Machine.Labels | toJson }}`, `{"role":"web"}`},
		{`{{ secret "db" | b64enc }}`, "cGEic3MKd29yZA=="},
		{`{{ "aGk=" | b64dec }}`, "hi"},
		{`{{ "hi" | dataURL }}`, "data:;base64,aGk="},
		{`{{ secretURL "db" }}`, "http://kiln/secret-handles/db-0s"},
		{`{{ secretURL "db" "10m" }}`, "http://kiln/secret-handles/db-10m0s"},
		{"x:{{ \"a\\nb\" | nindent 2 }}", "x:\n  a\n  b"},
		{`{{ "a\nb" | indent 3 }}`, "   a\n   b"},
		{`{{ .Machine.Hostname | default "none" }}`, "none"},
		{`{{ .Machine.Name | default "none" }}`, "web-1"},
		{`{{ "A b" | lower }}{{ "c" | upper }}{{ "  t  " | trim }}`, "a bCt"},
	} {
		out, err := Render(file, tc.tmpl, data, Options{Secrets: fakeSecrets{}})
		if err != nil || string(out) != tc.want {
			t.Errorf("%s = %q, %v; want %q", tc.tmpl, out, err, tc.want)
		}
	}
}

func TestRenderErrors(t *testing.T) {
	file := Target{Kind: KindFile, Part: "x"}
	for _, tc := range []struct {
		name, tmpl string
		opts       Options
		is         error
		want       string
	}{
		{"parse", `{{ .Machine.Name`, Options{}, nil, "spec.configs.files.x"},
		{"missing key", `{{ .Machine.Nope }}`, Options{}, nil, "Nope"},
		{"missing map key", `{{ .Machine.Labels.nope }}`, Options{}, nil, `map has no entry for key "nope"`},
		{"refused secret", `{{ secret "other" }}`, Options{Secrets: fakeSecrets{}}, errNope, `secret "other"`},
		{"refused URL", `{{ secretURL "other" }}`, Options{Secrets: fakeSecrets{}}, errNope, `secret "other"`},
		{"no secrets", `{{ secret "db" }}`, Options{}, ErrNoSecrets, "cannot use secrets"},
		{"bad TTL", `{{ secretURL "db" "-1m" }}`, Options{Secrets: fakeSecrets{}}, nil, "not a positive duration"},
		{"two TTLs", `{{ secretURL "db" "1m" "2m" }}`, Options{Secrets: fakeSecrets{}}, nil, "at most one TTL"},
		{"b64dec", `{{ "!!" | b64dec }}`, Options{}, nil, "not base64"},
		{"join", `{{ join "," 3 }}`, Options{}, nil, "not a list"},
		{"too large", `{{ range .Machine.Facts.disks }}{{ $.Machine.Facts | toJson }}{{ end }}{{ "x" | indent 64 | indent 64 }}`, Options{MaxBytes: 150}, ErrTooLarge, "more than 150 bytes"},
		{"range over a number", "x\n{{ if true }}{{ range 1000000000 }}{{ end }}{{ end }}", Options{}, nil, "spec.configs.files.x:2:"},
		{"template too large", strings.Repeat("x", 600), Options{MaxBytes: 500}, nil, "template is larger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(file, tc.tmpl, data, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("got %v; want %q (is %v)", err, tc.want, tc.is)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		kind, part, want string
		ok               bool
	}{
		{"ignition", "", "ignition", true},
		{"ignition", "x", "", false},
		{"cloud-init", "user-data", "cloud-init/user-data", true},
		{"cloud-init", "network-config", "cloud-init/network-config", true},
		{"cloud-init", "", "", false},
		{"cloud-init", "../meta-data", "", false},
		{"file", "ks.cfg", "file/ks.cfg", true},
		{"file", "preseed_1-x.cfg", "file/preseed_1-x.cfg", true},
		{"file", "..", "", false},
		{"file", "a..b", "", false},
		{"file", "a/b", "", false},
		{"file", ".hidden", "", false},
		{"file", "", "", false},
		{"kickstart", "x", "", false},
	} {
		got, err := ParseTarget(tc.kind, tc.part)
		if (err == nil) != tc.ok || (tc.ok && got.String() != tc.want) {
			t.Errorf("ParseTarget(%q, %q) = %v, %v", tc.kind, tc.part, got, err)
		}
	}
	cs := &resource.ConfigSpec{Ignition: "i", CloudInit: map[string]string{"user-data": "u"}, Files: map[string]string{"ks.cfg": "k"}}
	for _, tc := range []struct {
		t    Target
		want string
		ok   bool
	}{
		{Target{Kind: KindIgnition}, "i", true},
		{Target{Kind: KindCloudInit, Part: "user-data"}, "u", true},
		{Target{Kind: KindCloudInit, Part: "meta-data"}, "", false},
		{Target{Kind: KindFile, Part: "ks.cfg"}, "k", true},
		{Target{Kind: KindFile, Part: "x"}, "", false},
	} {
		if s, ok := tc.t.Template(cs); s != tc.want || ok != tc.ok {
			t.Errorf("%s: %q %v", tc.t, s, ok)
		}
	}
	if _, ok := (Target{Kind: KindIgnition}).Template(nil); ok {
		t.Error("template from no configs")
	}
}

var ignitionCases = []struct {
	name, config string
	ok           bool
}{
	{"minimal 3.3", `{"ignition": {"version": "3.3.0"}}`, true},
	{"minimal 3.0", `{"ignition": {"version": "3.0.0"}}`, true},
	{"file", `{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/etc/x", "mode": 420, "contents": {"source": "data:,hi"}}]}}`, true},
	{"user", `{"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA"]}]}}`, true},
	{"relative path", `{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "etc/x"}]}}`, false},
	{"bad source", `{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/x", "contents": {"source": "gopher://x"}}]}}`, false},
	{"duplicate path", `{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/x"}, {"path": "/x"}]}}`, false},
	{"wrong type", `{"ignition": {"version": "3.3.0"}, "storage": {"files": {"path": "/x"}}}`, false},
	{"unknown version", `{"ignition": {"version": "9.0.0"}}`, false},
	{"spec 2", `{"ignition": {"version": "2.3.0"}}`, false},
	{"no version", `{}`, false},
	{"not JSON", `{"ignition": `, false},
	{"empty", ``, false},
	{"array", `[]`, false},
}

func TestValidateIgnition(t *testing.T) {
	for _, tc := range ignitionCases {
		if err := ValidateIgnition([]byte(tc.config)); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// Kiln's server-side check agrees with Debian's ignition-validate (spec <= 3.3.0).
func TestValidateIgnitionAgreesWithIgnitionValidate(t *testing.T) {
	tool := testkit.NeedTool(t, "ignition-validate", "ignition")
	dir := t.TempDir()
	for _, tc := range ignitionCases {
		if tc.name == "empty" {
			continue // ignition-validate reads an empty file as no config at all
		}
		p := filepath.Join(dir, "c.ign")
		os.WriteFile(p, []byte(tc.config), 0o600)
		out, err := exec.Command(tool, p).CombinedOutput()
		if (err == nil) != tc.ok {
			t.Errorf("%s: ignition-validate says %v (%s), want ok=%v", tc.name, err, out, tc.ok)
		}
	}
}

func TestValidateCloudInit(t *testing.T) {
	for _, tc := range []struct {
		part, content string
		ok            bool
	}{
		{"meta-data", "instance-id: i-1\nlocal-hostname: web-1\n", true},
		{"meta-data", "local-hostname: web-1\n", false},
		{"meta-data", "instance-id: ''\n", false},
		{"meta-data", "- a\n", false},
		{"meta-data", "a: [\n", false},
		{"user-data", "", true},
		{"user-data", "#cloud-config\nhostname: web-1\n", true},
		{"user-data", "#cloud-config\n", true},
		{"user-data", "#cloud-config\r\nhostname: x\r\n", true},
		{"user-data", "#cloud-config\n- a\n", false},
		{"user-data", "#cloud-config\nhostname: x\nhostname: y\n", false},
		{"user-data", "#cloud-config\na: b\n---\nc: d\n", false},
		{"user-data", "#!/bin/sh\necho hi\n", true},
		{"user-data", "#include\nhttp://x\n", true},
		{"user-data", "Content-Type: multipart/mixed; boundary=x\n", true},
		{"user-data", "hostname: web-1\n", false},
		{"vendor-data", "#cloud-config\npackages: [vim]\n", true},
		{"network-config", "version: 2\nethernets: {}\n", true},
		{"network-config", "network:\n  version: 1\n  config: []\n", true},
		{"network-config", "version: 3\n", false},
		{"network-config", "ethernets: {}\n", false},
		{"vendor", "", false},
	} {
		if err := ValidateCloudInit(tc.part, []byte(tc.content)); (err == nil) != tc.ok {
			t.Errorf("%s %q: %v, want ok=%v", tc.part, tc.content, err, tc.ok)
		}
	}
}
