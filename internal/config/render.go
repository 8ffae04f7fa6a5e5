// Package config renders a profile's per-machine configuration templates (Ignition,
// cloud-init NoCloud parts, generic files such as kickstart or preseed) and validates
// the result before anything is served: a render that does not validate is an error
// for the operator, never a broken machine.
//
// Templates are Go text/template over Data, with a few helpers (see Funcs). Secret
// references go through the Secrets seam, so this package never decides who may
// receive a secret; internal/secrets does.
package config

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// Config kinds.
const (
	KindIgnition  = "ignition"
	KindCloudInit = "cloud-init"
	KindFile      = "file"
)

// CloudInitParts are the NoCloud files, in the order cloud-init reads them.
var CloudInitParts = []string{"meta-data", "user-data", "vendor-data", "network-config"}

// DefaultMaxBytes bounds a rendered config unless Options say otherwise.
const DefaultMaxBytes = 1 << 20

// Target names one config of a profile: ignition, cloud-init/<part> or file/<name>.
type Target struct {
	Kind string
	// Part is the cloud-init part or the file's name; empty for Ignition.
	Part string
}

// fileNameRE is what a generic file may be called: one path segment.
var fileNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ParseTarget checks a kind and part as given in a URL or on the command line.
func ParseTarget(kind, part string) (Target, error) {
	switch kind {
	case KindIgnition:
		if part != "" {
			return Target{}, fmt.Errorf("ignition has no parts (got %q)", part)
		}
		return Target{Kind: kind}, nil
	case KindCloudInit:
		for _, p := range CloudInitParts {
			if p == part {
				return Target{Kind: kind, Part: part}, nil
			}
		}
		return Target{}, fmt.Errorf("cloud-init part %q is not one of %s", part, strings.Join(CloudInitParts, ", "))
	case KindFile:
		if !fileNameRE.MatchString(part) || strings.Contains(part, "..") {
			return Target{}, fmt.Errorf("file name %q is not valid (letters, digits, '.', '_', '-', at most 128)", part)
		}
		return Target{Kind: kind, Part: part}, nil
	}
	return Target{}, fmt.Errorf("config kind %q is not one of ignition, cloud-init, file", kind)
}

// String is "ignition", "cloud-init/user-data" or "file/ks.cfg".
func (t Target) String() string {
	if t.Part == "" {
		return t.Kind
	}
	return t.Kind + "/" + t.Part
}

// Path is the profile field holding the target's template, for error messages.
func (t Target) Path() string {
	switch t.Kind {
	case KindIgnition:
		return "spec.configs.ignition"
	case KindCloudInit:
		return "spec.configs.cloudInit." + t.Part
	}
	return "spec.configs.files." + t.Part
}

// ContentType is what the target is served as.
func (t Target) ContentType() string {
	switch t.Kind {
	case KindIgnition:
		return "application/vnd.coreos.ignition+json"
	case KindCloudInit:
		return "text/yaml; charset=utf-8"
	}
	return "text/plain; charset=utf-8"
}

// Template returns the profile's template for the target, if it has one.
func (t Target) Template(cs *resource.ConfigSpec) (string, bool) {
	if cs == nil {
		return "", false
	}
	var s string
	var ok bool
	switch t.Kind {
	case KindIgnition:
		s, ok = cs.Ignition, cs.Ignition != ""
	case KindCloudInit:
		s, ok = cs.CloudInit[t.Part]
	case KindFile:
		s, ok = cs.Files[t.Part]
	}
	return s, ok
}

// Data is what a config template sees.
type Data struct {
	Machine Machine
	Profile Profile
	// ServerURL is Kiln's base URL as the machine reaches it.
	ServerURL string
	// Secrets are the names of the profile's secrets this machine may receive; their
	// values come only through the secret and secretURL functions.
	Secrets []string
}

// Machine is the machine part of Data.
type Machine struct {
	Name string
	// Labels are the operator's (and enrollment tokens') labels.
	Labels     map[string]string
	Interfaces []resource.Interface
	// MAC, IP and Hostname are those of the first interface.
	MAC, IP, Hostname string
	// Facts are what the machine reported about itself: usable in templates (a disk
	// name), never as a reason to release anything.
	Facts map[string]any
}

// Profile is the profile part of Data.
type Profile struct {
	Name   string
	Labels map[string]string
}

// Secrets resolves the secret references of one render.
type Secrets interface {
	// Value returns a secret's value, to be inlined.
	Value(name string) (string, error)
	// URL returns the URL of a single-use handle for a secret; ttl 0 is the default.
	URL(name string, ttl time.Duration) (string, error)
}

// ErrNoSecrets is returned by the secret functions when the render has no Secrets.
var ErrNoSecrets = errors.New("this render cannot use secrets")

// Options bound a render.
type Options struct {
	// MaxBytes bounds the output; 0 is DefaultMaxBytes.
	MaxBytes int
	// Secrets resolves secret and secretURL; nil makes them fail with ErrNoSecrets.
	Secrets Secrets
}

// Funcs returns the template functions. Each earns its place in a config:
//
//	secret NAME            the secret's value (only where it may be inlined)
//	secretURL NAME [TTL]   a single-use URL for the secret (kernel command lines,
//	                       Ignition sources, b2c.extra_args_url); TTL like "10m"
//	b64enc, b64dec         base64 (Ignition data URLs, cloud-init encoding: b64)
//	dataURL                "data:;base64,..." for an Ignition files[].contents.source
//	toJson                 any value as JSON: a safely quoted string in Ignition
//	                       JSON and in YAML (JSON strings are YAML flow scalars)
//	indent N, nindent N    indent every line (YAML block scalars: content: |)
//	default D V            V, or D when V is empty
//	join SEP LIST, lower, upper, trim
//
// A value inlined as text must be text: encode a binary secret with b64enc or dataURL
// (toJson would replace its invalid UTF-8).
func Funcs(s Secrets) template.FuncMap {
	return template.FuncMap{
		"secret": func(name string) (string, error) {
			if s == nil {
				return "", ErrNoSecrets
			}
			return s.Value(name)
		},
		"secretURL": func(name string, ttl ...string) (string, error) {
			if s == nil {
				return "", ErrNoSecrets
			}
			var d time.Duration
			switch len(ttl) {
			case 0:
			case 1:
				var err error
				if d, err = time.ParseDuration(ttl[0]); err != nil || d <= 0 {
					return "", fmt.Errorf("secretURL %q: TTL %q is not a positive duration like 5m", name, ttl[0])
				}
			default:
				return "", fmt.Errorf("secretURL %q: at most one TTL argument", name)
			}
			return s.URL(name, d)
		},
		"b64enc": func(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) },
		"b64dec": func(v string) (string, error) {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return "", fmt.Errorf("b64dec: not base64")
			}
			return string(b), nil
		},
		"dataURL": func(v string) string { return "data:;base64," + base64.StdEncoding.EncodeToString([]byte(v)) },
		"toJson": func(v any) (string, error) {
			var b bytes.Buffer
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(v); err != nil {
				return "", fmt.Errorf("toJson: %v", err)
			}
			return strings.TrimSuffix(b.String(), "\n"), nil
		},
		"indent":  indent,
		"nindent": func(n int, s string) string { return "\n" + indent(n, s) },
		"default": func(d, v any) any {
			if empty(v) {
				return d
			}
			return v
		},
		"join": func(sep string, list any) (string, error) {
			switch l := list.(type) {
			case []string:
				return strings.Join(l, sep), nil
			case []any:
				parts := make([]string, len(l))
				for i, v := range l {
					parts[i] = fmt.Sprint(v)
				}
				return strings.Join(parts, sep), nil
			}
			return "", fmt.Errorf("join: %T is not a list", list)
		},
		"lower": strings.ToLower,
		"upper": strings.ToUpper,
		"trim":  strings.TrimSpace,
	}
}

func indent(n int, s string) string {
	if n < 0 || n > 64 {
		n = 0
	}
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

func empty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case bool:
		return !x
	case int:
		return x == 0
	case int64:
		return x == 0
	case float64:
		return x == 0
	case []any:
		return len(x) == 0
	case []string:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	case map[string]string:
		return len(x) == 0
	}
	return false
}

// checkNode refuses {{ range N }} over a number literal: a loop that writes nothing
// is not stopped by the output limit, and a config has no use for counting. Loops
// over data are bounded by the data.
func checkNode(tree *parse.Tree, n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkNode(tree, c); err != nil {
				return err
			}
		}
	case *parse.RangeNode:
		if p := n.Pipe; p != nil && len(p.Cmds) == 1 && len(p.Cmds[0].Args) == 1 {
			if _, ok := p.Cmds[0].Args[0].(*parse.NumberNode); ok {
				loc, _ := tree.ErrorContext(n)
				return fmt.Errorf("%s: range over a number is not supported in config templates (range over a list or map)", loc)
			}
		}
		if err := checkNode(tree, n.List); err != nil {
			return err
		}
		return checkNode(tree, n.ElseList)
	case *parse.IfNode:
		if err := checkNode(tree, n.List); err != nil {
			return err
		}
		return checkNode(tree, n.ElseList)
	case *parse.WithNode:
		if err := checkNode(tree, n.List); err != nil {
			return err
		}
		return checkNode(tree, n.ElseList)
	}
	return nil
}

// ErrTooLarge: the rendered config exceeds Options.MaxBytes.
var ErrTooLarge = errors.New("rendered config is too large")

// limitedBuffer fails writes past max, which stops the template.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, fmt.Errorf("%w (more than %d bytes)", ErrTooLarge, b.max)
	}
	return b.Buffer.Write(p)
}

// Render executes text, the template for target, over data and validates the result
// for the target's kind. Errors name the profile field and say what is wrong.
func Render(target Target, text string, data Data, opts Options) ([]byte, error) {
	out, err := Execute(target, text, data, opts)
	if err != nil {
		return nil, err
	}
	if err := Validate(target, out); err != nil {
		return nil, fmt.Errorf("%s: rendered %s does not validate: %w", target.Path(), target, err)
	}
	return out, nil
}

// Execute runs the template without validating the output.
func Execute(target Target, text string, data Data, opts Options) ([]byte, error) {
	max := opts.MaxBytes
	if max <= 0 {
		max = DefaultMaxBytes
	}
	if len(text) > max {
		return nil, fmt.Errorf("%s: template is larger than %d bytes", target.Path(), max)
	}
	t, err := template.New(target.Path()).Option("missingkey=error").Funcs(Funcs(opts.Secrets)).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", target.Path(), err)
	}
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		if err := checkNode(tt.Tree, tt.Tree.Root); err != nil {
			return nil, err
		}
	}
	buf := &limitedBuffer{max: max}
	if err := t.Execute(buf, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", target, err)
	}
	return buf.Bytes(), nil
}
