// Package observability holds the tests of what Kiln ships for monitoring: the
// Prometheus alerting rules in deploy/prometheus and the Grafana dashboard in
// deploy/grafana, checked by promtool and against the metrics a running kiln
// serve exports. It has no code of its own.
package observability
