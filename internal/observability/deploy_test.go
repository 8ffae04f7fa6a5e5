package observability

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kilnhq/kiln/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m.Run)) }

const (
	alertsFile    = "../../deploy/prometheus/alerts.yaml"
	dashboardFile = "../../deploy/grafana/kiln.json"
)

func TestAlertRulesPassPromtool(t *testing.T) {
	promtool := testkit.NeedTool(t, "promtool", "prometheus")
	out, err := exec.Command(promtool, "check", "rules", alertsFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", alertsFile, err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules: no SUCCESS in\n%s", out)
	}
}

// kilnMetric finds the Kiln metric names an expression uses.
var kilnMetric = regexp.MustCompile(`\bkiln_[a-zA-Z0-9_:]+`)

// alertExprs are the expressions of every rule in alerts.yaml.
func alertExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var out []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	return out
}

// dashboardExprs are the queries of every panel of the dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" {
		t.Errorf("%s: no uid (Grafana provisioning needs a stable one)", dashboardFile)
	}
	var out []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
		}
		for _, q := range p.Targets {
			out = append(out, q.Expr)
		}
	}
	return out
}

// unknownMetrics are the Kiln metric names exprs use that exported lacks.
func unknownMetrics(exprs []string, exported map[string]bool) (used, unknown []string) {
	for _, e := range exprs {
		for _, name := range kilnMetric.FindAllString(e, -1) {
			if !slices.Contains(used, name) {
				used = append(used, name)
			}
			if !exported[name] && !slices.Contains(unknown, name) {
				unknown = append(unknown, name)
			}
		}
	}
	return used, unknown
}

func TestUnknownMetricsFindsMisspelledNames(t *testing.T) {
	exported := map[string]bool{"kiln_machines": true, "kiln_http_requests_total": true}
	used, unknown := unknownMetrics([]string{`sum by (state) (kiln_machines)`, `rate(kiln_http_request_total[5m]) / rate(kiln_http_requests_total[5m])`}, exported)
	if len(used) != 3 || !slices.Equal(unknown, []string{"kiln_http_request_total"}) {
		t.Fatalf("used %v, unknown %v; want 3 used and kiln_http_request_total unknown", used, unknown)
	}
}

// scrapeNames are the sample names of a /metrics answer (histograms as their
// _bucket, _sum and _count series).
func scrapeNames(r io.Reader) map[string]bool {
	names := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if i := strings.IndexAny(l, "{ "); i > 0 {
			names[l[:i]] = true
		}
	}
	return names
}

// freeUDPAddr is a loopback UDP address nothing listens on now.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// TestDashboardAndAlertsUseExportedMetrics scrapes a kiln serve running every
// protocol (DHCP on lo, TFTP and HTTPS on loopback) and fails for each metric the
// dashboard or the alerts name that it does not export: a renamed metric must
// take its queries along.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	testkit.NeedRoot(t, "DHCP on UDP port 67 of lo")
	opts := testkit.ServeOptions{
		HTTPS: true,
		Args:  []string{"--dhcp-interface", "lo", "--tftp-listen", freeUDPAddr(t)},
	}
	s := testkit.Serve(t, opts)
	// A subnet with a pool, for the per-subnet pool gauges; a restart computes the
	// gauges at once instead of at the next refresh.
	s.MustKiln("apiVersion: kiln.dev/v1\nkind: Subnet\nmetadata: {name: lab}\nspec: {cidr: 10.99.0.0/24, pools: [{start: 10.99.0.10, end: 10.99.0.19}]}\n", "apply", "-f", "-")
	s.Stop()
	opts.DataDir = s.DataDir
	s = testkit.Serve(t, opts)
	var exported map[string]bool
	// The store-derived gauges are computed just after start: wait for them.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		exported = scrapeNames(resp.Body)
		resp.Body.Close()
		if exported["kiln_dhcp_pool_addresses"] || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, tc := range []struct {
		file  string
		exprs []string
	}{
		{alertsFile, alertExprs(t)},
		{dashboardFile, dashboardExprs(t)},
	} {
		used, unknown := unknownMetrics(tc.exprs, exported)
		if len(used) < 8 {
			t.Errorf("%s uses only %d Kiln metrics (%v): did the queries fail to parse?", tc.file, len(used), used)
		}
		for _, name := range unknown {
			t.Errorf("%s queries %s, which kiln serve does not export", tc.file, name)
		}
	}
	if t.Failed() {
		var names []string
		for n := range exported {
			if strings.HasPrefix(n, "kiln_") {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		t.Logf("kiln serve exports:\n%s", strings.Join(names, "\n"))
	}
}
