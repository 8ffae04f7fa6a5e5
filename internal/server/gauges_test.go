package server

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

// gaugeValue is the value of the series name{labels}, and whether it exists.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestStateGauges computes the gauges from a store holding machines in each
// state, a subnet whose pool is partly leased (one lease expired, one outside
// the pool, one released), workflows and power jobs, and checks each series.
func TestStateGauges(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir(), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	later, earlier := now.Add(time.Hour), now.Add(-time.Hour)
	obj := func(kind, name string, spec, status any) *resource.Object {
		s, _ := json.Marshal(spec)
		o := &resource.Object{Kind: kind, Metadata: resource.Metadata{Name: name}, Spec: s}
		if status != nil {
			o.Status, _ = json.Marshal(status)
		}
		return o
	}
	objs := []*resource.Object{
		obj("Subnet", "lab", resource.SubnetSpec{CIDR: "10.0.0.0/24", Pools: []resource.Pool{{Start: "10.0.0.10", End: "10.0.0.19"}, {Start: "10.0.0.100", End: "10.0.0.109"}}}, nil),
		obj("Subnet", "empty", resource.SubnetSpec{CIDR: "10.1.0.0/24", Pools: []resource.Pool{{Start: "10.1.0.10", End: "10.1.0.13"}}}, nil),
		obj("Lease", "10.0.0.10", resource.LeaseSpec{IP: "10.0.0.10", MAC: "52:54:00:00:00:01", Subnet: "lab", State: resource.LeaseBound, ExpiresAt: &later}, nil),
		obj("Lease", "10.0.0.105", resource.LeaseSpec{IP: "10.0.0.105", MAC: "52:54:00:00:00:02", Subnet: "lab", State: resource.LeaseOffered, ExpiresAt: &later}, nil),
		obj("Lease", "10.0.0.11", resource.LeaseSpec{IP: "10.0.0.11", MAC: "52:54:00:00:00:03", Subnet: "lab", State: resource.LeaseBound, ExpiresAt: &earlier}, nil),
		obj("Lease", "10.0.0.12", resource.LeaseSpec{IP: "10.0.0.12", MAC: "52:54:00:00:00:04", Subnet: "lab", State: resource.LeaseReleased, ExpiresAt: &later}, nil),
		obj("Lease", "10.0.0.50", resource.LeaseSpec{IP: "10.0.0.50", MAC: "52:54:00:00:00:05", Subnet: "lab", State: resource.LeaseBound, ExpiresAt: &later}, nil),
		obj("Machine", "a", resource.MachineSpec{}, nil),
		obj("Machine", "b", resource.MachineSpec{}, resource.MachineStatus{State: resource.StateProvisioning}),
		obj("Machine", "c", resource.MachineSpec{}, resource.MachineStatus{State: resource.StateFailed}),
		obj("Machine", "d", resource.MachineSpec{}, resource.MachineStatus{State: resource.StateFailed}),
		obj("Workflow", "w1", resource.WorkflowSpec{Machine: "b", Template: "t"}, map[string]string{"state": "running"}),
		obj("Workflow", "w2", resource.WorkflowSpec{Machine: "c", Template: "t"}, map[string]string{"state": "failed"}),
		obj("PowerJob", "p1", resource.PowerJobSpec{Machine: "a", Op: "on"}, map[string]string{"state": "succeeded"}),
		obj("PowerJob", "p2", resource.PowerJobSpec{Machine: "a", Op: "on"}, map[string]string{"state": "failed"}),
		obj("PowerJob", "p3", resource.PowerJobSpec{Machine: "a", Op: "off"}, map[string]string{"state": "failed"}),
	}
	if err := st.Update(ctx, func(tx store.Tx) error {
		for _, o := range objs {
			if err := tx.Create(ctx, o); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	g := newStateGauges(reg)
	caNotAfter := now.Add(365 * 24 * time.Hour).Truncate(time.Second)
	g.caNotAfter = caNotAfter
	if err := g.refresh(ctx, st, now); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"kiln_machines", map[string]string{"state": "new"}, 1},
		{"kiln_machines", map[string]string{"state": "provisioning"}, 1},
		{"kiln_machines", map[string]string{"state": "provisioned"}, 0},
		{"kiln_machines", map[string]string{"state": "failed"}, 2},
		{"kiln_dhcp_pool_addresses", map[string]string{"subnet": "lab"}, 20},
		{"kiln_dhcp_pool_leased_addresses", map[string]string{"subnet": "lab"}, 2},
		{"kiln_dhcp_pool_utilization_ratio", map[string]string{"subnet": "lab"}, 0.1},
		{"kiln_dhcp_pool_addresses", map[string]string{"subnet": "empty"}, 4},
		{"kiln_dhcp_pool_utilization_ratio", map[string]string{"subnet": "empty"}, 0},
		{"kiln_workflows", map[string]string{"state": "running"}, 1},
		{"kiln_workflows", map[string]string{"state": "failed"}, 1},
		{"kiln_workflows", map[string]string{"state": "pending"}, 0},
		{"kiln_power_jobs", map[string]string{"state": "succeeded"}, 1},
		{"kiln_power_jobs", map[string]string{"state": "failed"}, 2},
		{"kiln_certificate_expiry_timestamp_seconds", map[string]string{"cert": "ca"}, float64(caNotAfter.Unix())},
		{"kiln_state_metrics_refresh_timestamp_seconds", nil, float64(now.Unix())},
	} {
		got, ok := gaugeValue(t, reg, tc.name, tc.labels)
		if !ok || got != tc.want {
			t.Errorf("%s%v = %v (present %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	// No audit entries were written through the chain: its head is 0.
	if got, ok := gaugeValue(t, reg, "kiln_audit_chain_head_sequence", nil); !ok || got != 0 {
		t.Errorf("kiln_audit_chain_head_sequence = %v (present %v), want 0", got, ok)
	}

	// A deleted subnet's series go away; a failed refresh keeps the last values.
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.Delete(ctx, "Subnet", "empty", "") }); err != nil {
		t.Fatal(err)
	}
	if err := g.refresh(ctx, st, now); err != nil {
		t.Fatal(err)
	}
	if _, ok := gaugeValue(t, reg, "kiln_dhcp_pool_addresses", map[string]string{"subnet": "empty"}); ok {
		t.Error("a deleted subnet still has a pool series")
	}

	// Audit entries move the head.
	if err := st.Update(ctx, func(tx store.Tx) error {
		for range 3 {
			if err := tx.AppendAudit(ctx, &audit.Entry{Actor: "t", Action: "update", Kind: "Machine", Name: "a"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	g.serverCertFunc = func() (*x509.Certificate, error) { return nil, errors.New("no certificate") }
	if err := g.refresh(ctx, st, now); err == nil {
		t.Error("refresh without a server certificate reported no error")
	}
	if got, _ := gaugeValue(t, reg, "kiln_audit_chain_head_sequence", nil); got != 3 {
		t.Errorf("kiln_audit_chain_head_sequence after 3 entries = %v, want 3", got)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "kiln_state_metrics_refresh_errors_total" && mf.GetMetric()[0].GetCounter().GetValue() != 1 {
			t.Errorf("refresh errors = %v, want 1", mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
}
