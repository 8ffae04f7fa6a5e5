package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/kilnhq/kiln/internal/testkit"
)

// kilnServer is `kiln serve` running inside a lab's namespace.
type kilnServer struct {
	t           *testing.T
	l           *lab
	srv         *testkit.Server
	dataDir     string
	artifactDir string
	http        *http.Client
}

// Names of the test's artifacts and profile.
const (
	kernelArtifact = "e2e-kernel"
	initrdArtifact = "e2e-initrd"
	profileName    = "e2e-phone-home"
)

// kilnOptions say which of Kiln's servers run.
type kilnOptions struct {
	// dhcp: Kiln's DHCP server on the bridge, and its TFTP server.
	dhcp bool
	// tftp: Kiln's TFTP server on kilnIP:69, serving /usr/lib/ipxe.
	tftp bool
	// https: Kiln's HTTPS listener (enrollment, the agent API), and no --public-url,
	// so artifact URLs in workflows are paths the agent resolves.
	https bool
	// ipxeDirs replace /usr/lib/ipxe as --ipxe-dir (searched in order per file).
	ipxeDirs []string
	// extra are more `kiln serve` arguments.
	extra []string
}

// startKiln starts `kiln serve` in the namespace with the kernel and initramfs as
// artifacts, and waits until it is ready. Its log is printed if the test fails.
func startKiln(t *testing.T, l *lab, opts kilnOptions) *kilnServer {
	t.Helper()
	k := &kilnServer{
		t:           t,
		l:           l,
		dataDir:     filepath.Join(l.dir, "kiln-data"),
		artifactDir: filepath.Join(l.dir, "artifacts"),
		http:        l.httpClient(),
	}
	for _, d := range []string{k.dataDir, k.artifactDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"vmlinuz", "phone-home.cpio.gz"} {
		copyFile(t, filepath.Join(assetDir, f), filepath.Join(k.artifactDir, f))
	}
	args := []string{
		"--listen", kilnHTTP,
		"--artifact-dir", k.artifactDir,
		"--log-format", "json",
		"--log-level", "debug",
	}
	if opts.dhcp || opts.tftp {
		args = append(args, "--tftp-listen", kilnIP+":69")
		dirs := opts.ipxeDirs
		if len(dirs) == 0 {
			dirs = []string{"/usr/lib/ipxe"}
		}
		for _, d := range dirs {
			args = append(args, "--ipxe-dir", d)
		}
	}
	if opts.dhcp {
		args = append(args, "--dhcp-interface", bridgeName)
	}
	if opts.https {
		args = append(args, "--https-listen", kilnIP+":"+kilnHTTPSPort, "--enroll-url", kilnHTTPSURL, "--server-san", kilnIP)
	} else if opts.dhcp {
		args = append(args, "--public-url", kilnURL)
	}
	args = append(args, opts.extra...)
	// kiln.log is kept with the lab's other logs (keepLogs).
	k.srv = testkit.Serve(t, testkit.ServeOptions{
		DataDir:    k.dataDir,
		Args:       args,
		Command:    l.nsCommand,
		URL:        kilnURL,
		HTTPClient: k.http,
		LogFile:    filepath.Join(l.dir, "kiln.log"),
	})
	return k
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// apply runs `kiln apply -f -` as an operator would, in the namespace (the CLI finds
// the server's URL and the admin token in the data dir).
func (k *kilnServer) apply(manifest string) {
	k.t.Helper()
	out, err := k.srv.Kiln(manifest, "apply", "-f", "-")
	if err != nil {
		k.t.Fatalf("%v\nmanifest:\n%s", err, manifest)
	}
	k.t.Logf("kiln apply:\n%s", strings.TrimSpace(string(out)))
}

// bootManifest is the artifacts, the phone-home profile and, unless subnetMode is
// empty, the bridge's subnet in that mode.
func bootManifest(subnetMode string) string {
	m := fmt.Sprintf(`kind: Artifact
metadata: {name: %[1]s}
spec: {source: vmlinuz, arch: x86_64}
---
kind: Artifact
metadata: {name: %[2]s}
spec: {source: phone-home.cpio.gz, arch: x86_64}
---
kind: Profile
metadata: {name: %[3]s}
spec:
  description: Debian's kernel with an initramfs that phones home and powers off
  boot:
    kernel: %[1]s
    initrds: [%[2]s]
    cmdline: "console=ttyS0 panic=-1 quiet kiln.url={{ .ServerURL }}"
`, kernelArtifact, initrdArtifact, profileName)
	switch subnetMode {
	case "":
	case "proxy":
		// Another server hands out addresses: no pools, no router.
		m += fmt.Sprintf(`---
kind: Subnet
metadata: {name: e2e}
spec:
  cidr: 10.77.0.0/24
  mode: proxy
  bootServer: %s
  interfaces: [%s]
  unknownMachines: ignore
`, kilnIP, bridgeName)
	default:
		m += fmt.Sprintf(`---
kind: Subnet
metadata: {name: e2e}
spec:
  cidr: 10.77.0.0/24
  mode: %s
  pools:
    - {start: 10.77.0.100, end: 10.77.0.149}
  router: %s
  leaseTime: 1h
  bootServer: %s
  interfaces: [%s]
  unknownMachines: ignore
`, subnetMode, kilnIP, kilnIP, bridgeName)
	}
	return m
}

// machineManifest is a machine booting the phone-home profile; ip, if set, is its
// reserved address.
func machineManifest(name, mac, ip string) string {
	m := fmt.Sprintf(`---
kind: Machine
metadata: {name: %s, labels: {e2e: "true"}}
spec:
  profile: %s
  interfaces:
    - name: eth0
      mac: "%s"
`, name, profileName, mac)
	if ip != "" {
		m += fmt.Sprintf("      ip: %s\n", ip)
	}
	return m
}

// event is one entry of a machine's timeline.
type event struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Message string    `json:"message"`
}

func (e event) String() string {
	return fmt.Sprintf("%s %-16s %s", e.Time.Format("15:04:05.000"), e.Type, e.Message)
}

// get does an authenticated GET of Kiln's API.
func (k *kilnServer) get(path string) ([]byte, int, error) {
	req, err := http.NewRequest(http.MethodGet, k.srv.URL+path, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+k.srv.AdminToken)
	resp, err := k.http.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

// events is a machine's timeline, oldest first.
func (k *kilnServer) events(machine string) ([]event, error) {
	b, code, err := k.get("/api/v1/machines/" + machine + "/events?limit=1000")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET events of %s: %d %s", machine, code, b)
	}
	var list struct {
		Items []event `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("events of %s: %w", machine, err)
	}
	return list.Items, nil
}

// setMachineState writes a machine's status.state straight into the SQLite store:
// Kiln owns the state (a workflow's end sets it; the API sets none directly), and
// the boot endpoints read it on every request.
func (k *kilnServer) setMachineState(name, state string) {
	k.t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(k.dataDir, "kiln.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		k.t.Fatal(err)
	}
	defer db.Close()
	var raw string
	if err := db.QueryRow(`SELECT status FROM objects WHERE kind = 'Machine' AND name = ?`, name).Scan(&raw); err != nil {
		k.t.Fatalf("read status of machine %q: %v", name, err)
	}
	status := map[string]any{}
	if raw != "" {
		if err := json.Unmarshal([]byte(raw), &status); err != nil {
			k.t.Fatalf("status of machine %q: %v", name, err)
		}
	}
	status["state"] = state
	b, _ := json.Marshal(status)
	res, err := db.Exec(`UPDATE objects SET status = ? WHERE kind = 'Machine' AND name = ?`, string(b), name)
	if err != nil {
		k.t.Fatalf("set state of machine %q: %v", name, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		k.t.Fatalf("set state of machine %q: %d rows updated", name, n)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s\n%s", resp.Request.Method, resp.Request.URL, resp.Status, b)
	}
	return string(b)
}
