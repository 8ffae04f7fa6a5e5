package packaging

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kilnhq/kiln/internal/testkit"
)

const chartDir = "../../deploy/helm/kiln"

// HelmVersion is the helm scripts/install-deps.sh builds into .cache/bin from the
// Go module proxy (Helm is not in Debian 12; it is not a dependency of go.mod).
const HelmVersion = "v4.3.2"

// helmBinary is .cache/bin/helm (install-deps), else helm on PATH.
func helmBinary(t *testing.T) string {
	t.Helper()
	testkit.Slow(t, "runs helm")
	if p, err := filepath.Abs("../../.cache/bin/helm"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	testkit.Missing(t, "helm in .cache/bin or on PATH (scripts/install-deps.sh builds helm %s from the Go module proxy)", HelmVersion)
	return ""
}

// required are the values the chart cannot do without.
var required = []string{"--set", "database.existingSecret=kiln-db", "--set", "kek.existingSecret=kiln-kek"}

// render runs helm template and parses every document.
func render(t *testing.T, helm string, args ...string) []map[string]any {
	t.Helper()
	cmd := exec.Command(helm, append([]string{"template", "kiln", chartDir, "--namespace", "prov"}, append(slices.Clone(required), args...)...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm template %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(&out)
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template output: %v\n%s", err, out.String())
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

// path walks maps and lists: path(doc, "spec", "template", "spec", "containers", 0).
func path(v any, keys ...any) any {
	for _, k := range keys {
		switch x := v.(type) {
		case map[string]any:
			v = x[k.(string)]
		case []any:
			i := k.(int)
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func strs(v any) []string {
	var out []string
	for _, e := range v.([]any) {
		out = append(out, e.(string))
	}
	return out
}

// serveFlags are the flags `kiln serve --help` lists, so that the chart passes
// only flags the binary has.
func serveFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command(testkit.KilnBinary(t), "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("kiln serve --help: %v\n%s", err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	return flags
}

// TestHelmChart lints the chart and renders it with several values sets, then
// checks the manifests Kiln relies on: kinds and apiVersions, the database URL and
// the KEK from Secrets, the probes on /healthz and /readyz, a non-root user and no
// capability without DHCP or TFTP, host network with one replica per node and only
// NET_BIND_SERVICE and NET_RAW with DHCP, and only flags kiln serve has. (No
// schema validation against the Kubernetes OpenAPI: kubeconform needs schemas
// downloaded, which this offline test does not do.)
func TestHelmChart(t *testing.T) {
	helm := helmBinary(t)
	if out, err := exec.Command(helm, append([]string{"lint", "--strict", chartDir}, required...)...).CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	flags := serveFlags(t)

	type check struct {
		name string
		args []string
		// want: the StatefulSet's settings.
		replicas    int
		hostNetwork bool
		user        int
		caps        []string
		argsHave    []string
		argsLack    []string
	}
	for _, c := range []check{
		{name: "defaults", replicas: 2, user: 65532,
			argsHave: []string{"serve", "--tftp-listen=", "--server-san=kiln.prov.svc"}, argsLack: []string{"--dhcp-interface"}},
		{name: "dhcp", args: []string{"--set", "dhcp.enabled=true", "--set", "dhcp.interfaces={eth1,eth2}", "--set", "replicaCount=3"},
			replicas: 3, hostNetwork: true, user: 0, caps: []string{"NET_BIND_SERVICE", "NET_RAW"},
			argsHave: []string{"--dhcp-interface=eth1", "--dhcp-interface=eth2", "--tftp-listen="}},
		{name: "tftp only", args: []string{"--set", "tftp.enabled=true"}, replicas: 2, user: 0, caps: []string{"NET_BIND_SERVICE"},
			argsHave: []string{"--tftp-listen=0.0.0.0:69"}},
		{name: "names and no persistence", args: []string{"--set", "persistence.enabled=false", "--set", "publicURL=http://kiln.lab:8080",
			"--set", "serverSANs={kiln.lab}", "--set", "extraArgs={--log-format=json}"}, replicas: 2, user: 65532,
			argsHave: []string{"--public-url=http://kiln.lab:8080", "--server-san=kiln.lab", "--log-format=json"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			docs := render(t, helm, c.args...)
			kinds := map[string]map[string]any{}
			for _, d := range docs {
				key := d["apiVersion"].(string) + " " + d["kind"].(string) + " " + path(d, "metadata", "name").(string)
				kinds[key] = d
			}
			var keys []string
			for k := range kinds {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			want := []string{"apps/v1 StatefulSet kiln", "v1 Service kiln", "v1 Service kiln-headless", "v1 ServiceAccount kiln"}
			if !slices.Equal(keys, want) {
				t.Fatalf("rendered %q, want %q", keys, want)
			}
			sts := kinds["apps/v1 StatefulSet kiln"]
			pod := path(sts, "spec", "template", "spec")
			if n, _ := path(sts, "spec", "replicas").(int); n != c.replicas {
				t.Errorf("replicas %v, want %d", path(sts, "spec", "replicas"), c.replicas)
			}
			if path(sts, "spec", "serviceName") != "kiln-headless" {
				t.Errorf("serviceName %v", path(sts, "spec", "serviceName"))
			}
			if hn, _ := path(pod, "hostNetwork").(bool); hn != c.hostNetwork {
				t.Errorf("hostNetwork %v, want %v", hn, c.hostNetwork)
			}
			anti := path(pod, "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution", 0, "topologyKey")
			if c.hostNetwork != (anti == "kubernetes.io/hostname") {
				t.Errorf("one replica per node: anti-affinity %v with hostNetwork %v", anti, c.hostNetwork)
			}
			if c.hostNetwork && path(pod, "dnsPolicy") != "ClusterFirstWithHostNet" {
				t.Errorf("dnsPolicy %v on the host network", path(pod, "dnsPolicy"))
			}
			if path(pod, "automountServiceAccountToken") != false {
				t.Errorf("the service account token is mounted")
			}
			psc := path(pod, "securityContext")
			if u, _ := path(psc, "runAsUser").(int); u != c.user || path(psc, "runAsNonRoot") != (c.user != 0) || path(psc, "seccompProfile", "type") != "RuntimeDefault" {
				t.Errorf("pod securityContext %v, want user %d", psc, c.user)
			}
			ctr := path(pod, "containers", 0)
			if path(ctr, "name") != "kiln" || !strings.HasPrefix(path(ctr, "image").(string), "ghcr.io/kilnhq/kiln:") {
				t.Errorf("container %v %v", path(ctr, "name"), path(ctr, "image"))
			}
			sc := path(ctr, "securityContext")
			if path(sc, "readOnlyRootFilesystem") != true || path(sc, "allowPrivilegeEscalation") != false || !slices.Equal(strs(path(sc, "capabilities", "drop")), []string{"ALL"}) {
				t.Errorf("container securityContext %v", sc)
			}
			var caps []string
			if add := path(sc, "capabilities", "add"); add != nil {
				caps = strs(add)
			}
			if !slices.Equal(caps, c.caps) {
				t.Errorf("capabilities added %q, want %q", caps, c.caps)
			}
			args := strs(path(ctr, "args"))
			for _, a := range args[1:] {
				name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if !strings.HasPrefix(a, "--") || !flags[name] {
					t.Errorf("argument %q: kiln serve has no such flag", a)
				}
			}
			for _, a := range c.argsHave {
				if !slices.Contains(args, a) {
					t.Errorf("args %q lack %q", args, a)
				}
			}
			for _, a := range c.argsLack {
				if slices.ContainsFunc(args, func(s string) bool { return strings.HasPrefix(s, a) }) {
					t.Errorf("args %q have %q", args, a)
				}
			}
			// The database URL from the Secret, never in the manifest.
			env := map[string]any{}
			for _, e := range path(ctr, "env").([]any) {
				env[path(e, "name").(string)] = e
			}
			if path(env["KILN_DATABASE"], "valueFrom", "secretKeyRef", "name") != "kiln-db" || path(env["KILN_DATABASE"], "valueFrom", "secretKeyRef", "key") != "dsn" {
				t.Errorf("KILN_DATABASE: %v", env["KILN_DATABASE"])
			}
			if path(env["KILN_DATA_DIR"], "value") != "/var/lib/kiln/data" {
				t.Errorf("KILN_DATA_DIR: %v", env["KILN_DATA_DIR"])
			}
			// The KEK: a Secret volume copied by the init container into the data dir.
			var kekVol, dataVol any
			for _, v := range path(pod, "volumes").([]any) {
				switch path(v, "name") {
				case "kek":
					kekVol = v
				case "data":
					dataVol = v
				}
			}
			if path(kekVol, "secret", "secretName") != "kiln-kek" || path(kekVol, "secret", "items", 0, "path") != "kek.key" {
				t.Errorf("kek volume %v", kekVol)
			}
			initScript := strings.Join(strs(path(pod, "initContainers", 0, "command")), " ")
			if !strings.Contains(initScript, "cp /etc/kiln/kek/kek.key /var/lib/kiln/data/kek.key.tmp") || !strings.Contains(initScript, "chmod 600") {
				t.Errorf("init container: %s", initScript)
			}
			persistent := path(sts, "spec", "volumeClaimTemplates", 0, "metadata", "name") == "data"
			if persistent == (dataVol != nil) {
				t.Errorf("data: a claim template %v and a pod volume %v; want exactly one", persistent, dataVol)
			}
			// Probes on the endpoints kiln serve has.
			for probe, p := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"} {
				if path(ctr, probe, "httpGet", "path") != p || path(ctr, probe, "httpGet", "port") != "http" {
					t.Errorf("%s: %v, want %s on http", probe, path(ctr, probe), p)
				}
			}
			svc := kinds["v1 Service kiln"]
			var ports []string
			for _, p := range path(svc, "spec", "ports").([]any) {
				ports = append(ports, path(p, "name").(string)+"/"+path(p, "targetPort").(string))
			}
			if !slices.Equal(ports, []string{"http/http", "https/https"}) {
				t.Errorf("service ports %q", ports)
			}
		})
	}

	// Missing required values fail with the value's name.
	for _, c := range []struct {
		set  []string
		want string
	}{
		{[]string{"--set", "kek.existingSecret=k"}, "database.existingSecret: required"},
		{[]string{"--set", "database.existingSecret=d"}, "kek.existingSecret: required"},
		{[]string{"--set", "database.existingSecret=d", "--set", "kek.existingSecret=k", "--set", "dhcp.enabled=true"}, "dhcp.interfaces: required"},
	} {
		out, err := exec.Command(helm, append([]string{"template", "kiln", chartDir}, c.set...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("helm template %q: %v, want an error with %q:\n%s", c.set, err, c.want, out)
		}
	}
}
