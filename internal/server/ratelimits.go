package server

import (
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/ratelimit"
)

// Endpoint classes of the unauthenticated HTTP endpoints, each with its own
// per-source rate limit (--rate-limit CLASS=RATE:BURST).
const (
	RateScripts   = "scripts"    // iPXE scripts, per-MAC configs, secret handles
	RateArtifacts = "artifacts"  // kernels, initrds, images
	RatePhoneHome = "phone-home" // a booted environment's "I am up"
	RateEnroll    = "enroll"     // POST /enroll and the polls of pending enrollments
)

// DefaultRateLimits are per source address. A machine's netboot asks for two
// scripts, two or three artifacts, a few configs and one enrollment; iPXE and the
// agent retry every few seconds when refused. So 10,000 machines booting at once
// (each its own address, relayed or not: DHCP relays do not proxy HTTP) stay far
// below these, while one host flooding is held to a few writes per second. A site
// where many machines share one address (NAT) raises them.
func DefaultRateLimits() map[string]ratelimit.Rate {
	return map[string]ratelimit.Rate{
		RateScripts:   {PerSecond: 5, Burst: 50},
		RateArtifacts: {PerSecond: 20, Burst: 200},
		RatePhoneHome: {PerSecond: 2, Burst: 20},
		RateEnroll:    {PerSecond: 2, Burst: 20},
	}
}

// RateClasses lists the endpoint classes, for flags and documentation.
func RateClasses() []string { return slices.Sorted(maps.Keys(DefaultRateLimits())) }

// rateClass names the class of a request to an unauthenticated endpoint; "" for
// everything else (the API and agent API authenticate first; health checks and
// metrics are cheap and read-only).
func rateClass(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/ipxe" || p == "/boot.ipxe" || p == "/ipxe/by-cert",
		strings.HasPrefix(p, "/config/by-mac/"), strings.HasPrefix(p, "/secret-handles/"):
		return RateScripts
	case strings.HasPrefix(p, "/artifacts/"), strings.HasPrefix(p, "/uki/"):
		return RateArtifacts
	case p == "/phone-home":
		return RatePhoneHome
	case r.Method == http.MethodPost && (p == agentwire.EnrollPath || strings.HasPrefix(p, "/enroll/requests/")):
		return RateEnroll
	}
	return ""
}

// rateLimited wraps the boot listeners' handler in per-source rate limits, counted
// in kiln_http_rate_limited_total by class.
func (s *Server) rateLimited(next http.Handler) http.Handler {
	limits := DefaultRateLimits()
	maps.Copy(limits, s.cfg.RateLimits)
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_http_rate_limited_total",
		Help: "Requests to unauthenticated endpoints refused with 429 because their source address was over its rate limit, by endpoint class.",
	}, []string{"class"})
	s.registry.MustRegister(refused)
	limiters := map[string]*ratelimit.Limiter{}
	for class, rate := range limits {
		refused.WithLabelValues(class) // present at 0, so that alerts can use rate()
		if !rate.Off() {
			limiters[class] = ratelimit.NewLimiter(rate, s.cfg.RateLimitSources, nil)
		}
	}
	return ratelimit.Middleware(ratelimit.Classes{
		Classify: rateClass,
		Limiters: limiters,
		OnLimited: func(class string, src netip.Addr) {
			refused.WithLabelValues(class).Inc()
		},
	})(next)
}
