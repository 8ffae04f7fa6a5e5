package server

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/dhcp/dhcpstore"
	"github.com/kilnhq/kiln/internal/store"
)

// newDHCP builds the DHCP server on the store: subnets from Subnet objects, machines
// by MAC, leases as Lease objects (one per address, so replicas never double-lease).
func (s *Server) newDHCP(events *eventSink) (*dhcp.Server, error) {
	policy, err := dhcp.ParseHTTPSPolicy(s.cfg.BootHTTPS)
	if err != nil {
		return nil, fmt.Errorf("--boot-https: %w", err)
	}
	booter := &dhcp.DefaultBooter{BaseURL: s.cfg.PublicURL, HTTPS: policy, SecureBaseURL: s.cfg.EnrollURL}
	if policy != dhcp.HTTPSNever {
		if s.cfg.HTTPSListen == "" {
			return nil, fmt.Errorf("--boot-https %s: needs the HTTPS listener (--https-listen)", policy)
		}
		if booter.SecureBaseURL == "" {
			_, port, err := net.SplitHostPort(s.cfg.HTTPSListen)
			if err != nil {
				return nil, fmt.Errorf("--https-listen: %w", err)
			}
			booter.HTTPSPort, _ = strconv.Atoi(port)
		}
	}
	if s.cfg.PublicURL == "" {
		_, port, err := net.SplitHostPort(s.listener.Addr().String())
		if err != nil {
			return nil, err
		}
		booter.HTTPPort, _ = strconv.Atoi(port)
	} else if _, err := url.Parse(s.cfg.PublicURL); err != nil {
		return nil, fmt.Errorf("--public-url: %w", err)
	}
	srv := &dhcp.Server{
		Subnets:  &dhcpstore.Subnets{Store: s.store},
		Machines: &dhcpstore.Machines{Store: s.store},
		Leases:   dhcpstore.NewLeases(s.store, 0),
		Booter:   booter,
		Logger:   s.log,
		// The timeline is per machine: events of unknown MACs would be dropped.
		MachineEventsOnly: true,
		OnEvent: func(_ context.Context, e dhcp.Event) {
			if e.Machine == "" {
				return
			}
			events.Add(store.Event{Machine: e.Machine, Type: e.Type, Message: e.Message})
		},
	}
	s.registry.MustRegister(&dhcpCollector{m: &srv.Metrics})
	return srv, nil
}

// dhcpCollector exports the DHCP server's counters.
type dhcpCollector struct{ m *dhcp.Metrics }

var (
	dhcpReceived = prometheus.NewDesc("kiln_dhcp_received_total", "DHCP messages received, by type.", []string{"type"}, nil)
	dhcpSent     = prometheus.NewDesc("kiln_dhcp_sent_total", "DHCP messages sent, by type.", []string{"type"}, nil)
	dhcpDropped  = prometheus.NewDesc("kiln_dhcp_dropped_total", "DHCP packets dropped, by reason (malformed, no subnet, policy, overload ...).", []string{"reason"}, nil)
	dhcpSendErr  = prometheus.NewDesc("kiln_dhcp_send_errors_total", "DHCP replies that could not be sent.", nil, nil)
	dhcpQuar     = prometheus.NewDesc("kiln_dhcp_quarantined_total", "Addresses quarantined after DHCPDECLINE.", nil, nil)
)

func (c *dhcpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dhcpReceived, dhcpSent, dhcpDropped, dhcpSendErr, dhcpQuar} {
		ch <- d
	}
}

func (c *dhcpCollector) Collect(ch chan<- prometheus.Metric) {
	if c.m == nil {
		return
	}
	snap := c.m.Snapshot()
	// Every message type of RFC 2132 9.6 and every drop reason is exported, at 0
	// until it happens: a series that appears only with its first packet makes
	// rate() and the alerts on it (deploy/prometheus/alerts.yaml) blind to it.
	for t := dhcpv4.MessageTypeDiscover; t <= dhcpv4.MessageTypeInform; t++ {
		name := strings.ToLower(t.String())
		snap.Received[name] += 0
		snap.Sent[name] += 0
	}
	for r := dhcp.DropReason(0); r.String() != "unknown"; r++ {
		snap.Dropped[r.String()] += 0
	}
	for k, v := range snap.Received {
		ch <- prometheus.MustNewConstMetric(dhcpReceived, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range snap.Sent {
		ch <- prometheus.MustNewConstMetric(dhcpSent, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range snap.Dropped {
		ch <- prometheus.MustNewConstMetric(dhcpDropped, prometheus.CounterValue, float64(v), k)
	}
	ch <- prometheus.MustNewConstMetric(dhcpSendErr, prometheus.CounterValue, float64(snap.SendErrors))
	ch <- prometheus.MustNewConstMetric(dhcpQuar, prometheus.CounterValue, float64(snap.Quarantined))
}
