// Package ratelimit bounds what one source address may ask of Kiln's
// unauthenticated HTTP endpoints: a token bucket per source IP and endpoint class,
// kept in a map with a size cap (least recently seen sources are forgotten first),
// so that a flood from one host, or from many spoofed ones, neither starves the
// others nor grows memory without bound. Over its budget a request gets 429 with
// Retry-After, which iPXE and Kiln's agent wait out and retry.
package ratelimit

import (
	"container/list"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rate is a token bucket: PerSecond requests on average, Burst at once. The zero
// Rate means no limit.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Off reports whether r limits nothing.
func (r Rate) Off() bool { return r.PerSecond <= 0 }

func (r Rate) String() string {
	if r.Off() {
		return "off"
	}
	return strconv.FormatFloat(r.PerSecond, 'f', -1, 64) + ":" + strconv.Itoa(r.Burst)
}

// ParseRate reads "RATE:BURST" (requests per second, bucket size), "RATE" (burst
// the rate, at least 1) or "off" / "0".
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "off" || s == "0" {
		return Rate{}, nil
	}
	rate, burst, hasBurst := strings.Cut(s, ":")
	ps, err := strconv.ParseFloat(rate, 64)
	if err != nil || ps < 0 || math.IsInf(ps, 0) || math.IsNaN(ps) {
		return Rate{}, fmt.Errorf("rate %q: want RATE:BURST (requests per second, burst), RATE or off", s)
	}
	r := Rate{PerSecond: ps, Burst: max(1, int(math.Ceil(ps)))}
	if hasBurst {
		b, err := strconv.Atoi(burst)
		if err != nil || b < 1 {
			return Rate{}, fmt.Errorf("rate %q: burst %q is not a positive integer", s, burst)
		}
		r.Burst = b
	}
	return r, nil
}

// DefaultMaxSources is how many source addresses a Limiter remembers per class: at
// ~150 bytes each, about 10 MB per class at most.
const DefaultMaxSources = 65536

// Limiter holds one token bucket per source address.
type Limiter struct {
	rate       Rate
	maxSources int
	now        func() time.Time

	mu      sync.Mutex
	sources map[netip.Addr]*list.Element // of *bucket
	lru     list.List                    // front: most recently seen
}

type bucket struct {
	src    netip.Addr
	tokens float64
	last   time.Time
}

// NewLimiter returns a limiter of rate remembering at most maxSources addresses
// (<= 0: DefaultMaxSources); now is the clock (nil: time.Now).
func NewLimiter(rate Rate, maxSources int, now func() time.Time) *Limiter {
	if maxSources <= 0 {
		maxSources = DefaultMaxSources
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{rate: rate, maxSources: maxSources, now: now, sources: map[netip.Addr]*list.Element{}}
}

// Allow takes a token from src's bucket. When it is empty it returns false and how
// long until the next token.
func (l *Limiter) Allow(src netip.Addr) (bool, time.Duration) {
	if l.rate.Off() {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if e, ok := l.sources[src]; ok {
		b = e.Value.(*bucket)
		l.lru.MoveToFront(e)
		if elapsed := now.Sub(b.last); elapsed > 0 {
			b.tokens = min(float64(l.rate.Burst), b.tokens+elapsed.Seconds()*l.rate.PerSecond)
		}
		b.last = now
	} else {
		// A forgotten source starts with a full bucket: evicting under a flood of
		// many sources errs toward serving, never toward refusing a real machine.
		if len(l.sources) >= l.maxSources {
			oldest := l.lru.Back()
			delete(l.sources, oldest.Value.(*bucket).src)
			l.lru.Remove(oldest)
		}
		b = &bucket{src: src, tokens: float64(l.rate.Burst), last: now}
		l.sources[src] = l.lru.PushFront(b)
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate.PerSecond * float64(time.Second))
	return false, wait
}

// Len is how many sources the limiter remembers.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sources)
}

// Classes limits requests by endpoint class.
type Classes struct {
	// Classify names a request's class; "" is not limited.
	Classify func(r *http.Request) string
	// Limiters by class; a class without one is not limited.
	Limiters map[string]*Limiter
	// OnLimited, if set, is called for every refused request (metrics).
	OnLimited func(class string, src netip.Addr)
}

// Middleware refuses requests over their source's budget with 429 Too Many
// Requests and a Retry-After in whole seconds (at least 1).
func Middleware(c Classes) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			class := c.Classify(r)
			l := c.Limiters[class]
			if l == nil {
				next.ServeHTTP(w, r)
				return
			}
			src := SourceAddr(r)
			ok, wait := l.Allow(src)
			if ok {
				next.ServeHTTP(w, r)
				return
			}
			if c.OnLimited != nil {
				c.OnLimited(class, src)
			}
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
			http.Error(w, "too many requests from this address; retry later", http.StatusTooManyRequests)
		})
	}
}

// SourceAddr is the request's peer address. Forwarding headers are not trusted:
// any host on the provisioning network could set them.
func SourceAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}
