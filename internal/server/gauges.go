package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/power"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// stateGaugeInterval is how often the state gauges are recomputed. They come from
// the store, not from each scrape: with 100,000 machines a scrape must not be a
// table scan per Prometheus server that scrapes.
const stateGaugeInterval = 30 * time.Second

// stateGauges are what operators alert on: how many machines are in each state,
// how full each subnet's pools are, how many workflows and power jobs are in each
// state, when the CA and server certificates expire, how far the audit chain goes.
type stateGauges struct {
	machines       *prometheus.GaugeVec
	poolAddresses  *prometheus.GaugeVec
	poolLeased     *prometheus.GaugeVec
	poolUtil       *prometheus.GaugeVec
	workflows      *prometheus.GaugeVec
	powerJobs      *prometheus.GaugeVec
	certExpiry     *prometheus.GaugeVec
	auditHead      prometheus.Gauge
	lastRefresh    prometheus.Gauge
	refreshErrors  prometheus.Counter
	serverCertFunc func() (*x509.Certificate, error)
	caNotAfter     time.Time
}

func newStateGauges(reg prometheus.Registerer) *stateGauges {
	g := &stateGauges{
		machines: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_machines", Help: "Machines by state (new, provisioning, provisioned, failed).",
		}, []string{"state"}),
		poolAddresses: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_dhcp_pool_addresses", Help: "Addresses in a subnet's DHCP pools.",
		}, []string{"subnet"}),
		poolLeased: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_dhcp_pool_leased_addresses", Help: "Pool addresses of a subnet under an unexpired lease (offered or bound).",
		}, []string{"subnet"}),
		poolUtil: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_dhcp_pool_utilization_ratio", Help: "Leased share of a subnet's pool addresses, 0 to 1.",
		}, []string{"subnet"}),
		workflows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_workflows", Help: "Workflows by state (pending, running, succeeded, failed).",
		}, []string{"state"}),
		powerJobs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_power_jobs", Help: "Power jobs kept in the store, by state (pending, running, succeeded, failed).",
		}, []string{"state"}),
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_certificate_expiry_timestamp_seconds", Help: "Not-after time of Kiln's certificates (cert: ca, server), Unix seconds.",
		}, []string{"cert"}),
		auditHead: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_audit_chain_head_sequence", Help: "Sequence number of the newest audit chain entry.",
		}),
		lastRefresh: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_state_metrics_refresh_timestamp_seconds", Help: "When the store-derived gauges were last computed, Unix seconds.",
		}),
		refreshErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_state_metrics_refresh_errors_total", Help: "Failed computations of the store-derived gauges.",
		}),
	}
	reg.MustRegister(g.machines, g.poolAddresses, g.poolLeased, g.poolUtil, g.workflows, g.powerJobs,
		g.certExpiry, g.auditHead, g.lastRefresh, g.refreshErrors)
	return g
}

// watchCertificates makes the certificate gauges follow the CA's not-after and
// the server certificate that the TLS listener would present now (it is reissued
// before it expires, so the gauge moves).
func (g *stateGauges) watchCertificates(caNotAfter time.Time, tc *tls.Config) {
	g.caNotAfter = caNotAfter
	g.serverCertFunc = func() (*x509.Certificate, error) {
		c, err := tc.GetCertificate(nil)
		if err != nil {
			return nil, err
		}
		if c.Leaf != nil {
			return c.Leaf, nil
		}
		return x509.ParseCertificate(c.Certificate[0])
	}
}

// stateCounts are the gauges' values, computed in one read transaction.
type stateCounts struct {
	machines, workflows, powerJobs map[string]int
	poolAddresses, poolLeased      map[string]int
	auditHead                      int64
}

// refresh recomputes every gauge; on an error the previous values stay.
func (g *stateGauges) refresh(ctx context.Context, st store.Store, now time.Time) error {
	c := stateCounts{
		// The states every operator expects to see, at 0 when empty: an absent
		// series and a zero one alert differently.
		machines:      map[string]int{resource.StateNew: 0, resource.StateProvisioning: 0, resource.StateProvisioned: 0, resource.StateFailed: 0},
		workflows:     map[string]int{agentwire.Pending: 0, agentwire.Running: 0, agentwire.Succeeded: 0, agentwire.Failed: 0},
		powerJobs:     map[string]int{string(power.JobPending): 0, string(power.JobRunning): 0, string(power.JobSucceeded): 0, string(power.JobFailed): 0},
		poolAddresses: map[string]int{},
		poolLeased:    map[string]int{},
	}
	err := st.View(ctx, func(tx store.Tx) error {
		ranges := map[string][][2]netip.Addr{}
		if err := eachObject(ctx, tx, "Subnet", func(o *resource.Object) {
			spec, err := resource.Typed[resource.SubnetSpec](o)
			if err != nil {
				return
			}
			n := 0
			for _, p := range spec.Pools {
				lo, err1 := netip.ParseAddr(p.Start)
				hi, err2 := netip.ParseAddr(p.End)
				if err1 != nil || err2 != nil || !lo.Is4() || !hi.Is4() || hi.Less(lo) {
					continue
				}
				ranges[o.Metadata.Name] = append(ranges[o.Metadata.Name], [2]netip.Addr{lo, hi})
				n += int(ipv4Uint(hi)-ipv4Uint(lo)) + 1
			}
			c.poolAddresses[o.Metadata.Name] = n
		}); err != nil {
			return err
		}
		if err := eachObject(ctx, tx, "Lease", func(o *resource.Object) {
			spec, err := resource.Typed[resource.LeaseSpec](o)
			if err != nil || (spec.State != resource.LeaseBound && spec.State != resource.LeaseOffered) {
				return
			}
			if spec.ExpiresAt != nil && !spec.ExpiresAt.After(now) {
				return
			}
			ip, err := netip.ParseAddr(spec.IP)
			if err != nil {
				return
			}
			for _, r := range ranges[spec.Subnet] {
				if !ip.Less(r[0]) && !r[1].Less(ip) {
					c.poolLeased[spec.Subnet]++
					return
				}
			}
		}); err != nil {
			return err
		}
		if err := eachObject(ctx, tx, "Machine", func(o *resource.Object) {
			var s resource.MachineStatus
			_ = json.Unmarshal(o.Status, &s)
			c.machines[cmp.Or(s.State, resource.StateNew)]++
		}); err != nil {
			return err
		}
		if err := eachObject(ctx, tx, "Workflow", func(o *resource.Object) {
			var s agentwire.WorkflowStatus
			_ = json.Unmarshal(o.Status, &s)
			c.workflows[cmp.Or(s.State, agentwire.Pending)]++
		}); err != nil {
			return err
		}
		if err := eachObject(ctx, tx, "PowerJob", func(o *resource.Object) {
			var j power.Job
			_ = json.Unmarshal(o.Status, &j)
			c.powerJobs[cmp.Or(string(j.State), string(power.JobPending))]++
		}); err != nil {
			return err
		}
		seq, _, err := tx.AuditHead(ctx)
		c.auditHead = seq
		return err
	})
	if err != nil {
		g.refreshErrors.Inc()
		return fmt.Errorf("compute state gauges: %w", err)
	}
	setAll(g.machines, c.machines)
	setAll(g.workflows, c.workflows)
	setAll(g.powerJobs, c.powerJobs)
	g.poolAddresses.Reset()
	g.poolLeased.Reset()
	g.poolUtil.Reset()
	for subnet, n := range c.poolAddresses {
		g.poolAddresses.WithLabelValues(subnet).Set(float64(n))
		g.poolLeased.WithLabelValues(subnet).Set(float64(c.poolLeased[subnet]))
		if n > 0 {
			g.poolUtil.WithLabelValues(subnet).Set(float64(c.poolLeased[subnet]) / float64(n))
		}
	}
	g.auditHead.Set(float64(c.auditHead))
	if !g.caNotAfter.IsZero() {
		g.certExpiry.WithLabelValues("ca").Set(float64(g.caNotAfter.Unix()))
	}
	if g.serverCertFunc != nil {
		if cert, err := g.serverCertFunc(); err == nil {
			g.certExpiry.WithLabelValues("server").Set(float64(cert.NotAfter.Unix()))
		} else {
			g.refreshErrors.Inc()
			return fmt.Errorf("server certificate for its expiry gauge: %w", err)
		}
	}
	g.lastRefresh.Set(float64(now.Unix()))
	return nil
}

// eachObject calls fn for every object of kind, a page at a time.
func eachObject(ctx context.Context, tx store.Tx, kind string, fn func(*resource.Object)) error {
	cont := ""
	for {
		objs, next, err := tx.List(ctx, kind, store.ListOptions{Limit: 1000, Continue: cont})
		if err != nil {
			return fmt.Errorf("list %s: %w", kind, err)
		}
		for _, o := range objs {
			fn(o)
		}
		if next == "" {
			return nil
		}
		cont = next
	}
}

func setAll(v *prometheus.GaugeVec, counts map[string]int) {
	v.Reset()
	for k, n := range counts {
		v.WithLabelValues(k).Set(float64(n))
	}
}

func ipv4Uint(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
