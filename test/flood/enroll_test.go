package flood

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/agent"
	"github.com/kilnhq/kiln/internal/testkit"
)

// enrollLoad is legitimate agents enrolling new machines over HTTPS with the
// agent's own code (agent.EnrollSession: a pinned TLS connection, a P-256 key made
// on the spot, a channel-bound CSR, POST /enroll, the certificate checked), with
// one join token of many uses.
type enrollLoad struct {
	t              *testing.T
	url, token, fp string
	agents, max    int
	// next numbers the enrollments of all phases: the n-th comes from agentAddr(n)
	// and reports agentMAC(n), so that no address or MAC is used twice in a run.
	next atomic.Int64
}

// maxAgentAddrs is how many addresses agentAddr has: 127.0.2.1 ... 127.0.255.250.
const maxAgentAddrs = 254 * 250

func newEnrollLoad(t *testing.T, s *testkit.Server) *enrollLoad {
	t.Helper()
	return &enrollLoad{
		t:      t,
		url:    s.HTTPSURL,
		token:  strings.TrimSpace(s.MustKiln("", "join-token", "create", "--profile", "agent", "--max-uses", "1000000", "--ttl", "2h")),
		fp:     strings.TrimSpace(s.MustKiln("", "ca", "show", "--fingerprint")),
		agents: envInt("KILN_FLOOD_AGENTS", 16),
		// Two phases enroll; each address and MAC once in a run.
		max: min(envInt("KILN_FLOOD_ENROLLS", 20000), maxAgentAddrs/2),
	}
}

// agentAddr is the source address of the n-th enrollment (n from 0). Each
// enrollment has its own, as each machine on a provisioning network has: the
// per-source limit of POST /enroll (default 2/s) is for a flooder, and legitimate
// agents sharing one loopback address would measure that limit, not Kiln.
func agentAddr(n int64) string {
	n %= maxAgentAddrs
	return fmt.Sprintf("127.0.%d.%d", 2+n/250, 1+n%250)
}

func agentMAC(n int64) string {
	return net.HardwareAddr{0x52, 0x54, 0x01, byte(n >> 16), byte(n >> 8), byte(n)}.String()
}

// run enrolls with l.agents agents at a time until ctx ends or l.max enrollments
// were started, and says what they got.
func (l *enrollLoad) run(ctx context.Context) string {
	var ok, limited, failed, started atomic.Int64
	var firstErr error
	var mu sync.Mutex
	latencies := make([][]time.Duration, l.agents)
	// over is ctx's end. Its Err lags its deadline when the timer's goroutine waits
	// for a CPU, while a dial under that deadline already fails at once: without
	// this, agents would count a burst of "i/o timeout" failures at the end.
	deadline, hasDeadline := ctx.Deadline()
	over := func() bool { return ctx.Err() != nil || hasDeadline && !time.Now().Before(deadline) }
	var wg sync.WaitGroup
	start := time.Now()
	for a := range l.agents {
		wg.Go(func() {
			for !over() && started.Add(1) <= int64(l.max) {
				n := l.next.Add(1) - 1
				t0 := time.Now()
				id, err := agent.EnrollSession(ctx, agent.EnrollOptions{
					Server: l.url, CAFingerprint: l.fp, Token: l.token, Timeout: 30 * time.Second,
					Facts:  map[string]any{"interfaces": []any{map[string]any{"name": "eth0", "mac": agentMAC(n)}}},
					Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(agentAddr(n))}},
				})
				var se *agent.ServerError
				switch {
				case err == nil:
					id.Close()
					ok.Add(1)
					latencies[a] = append(latencies[a], time.Since(t0))
				case over():
					// The phase ended during this enrollment: not counted.
				case errors.As(err, &se) && se.Status == http.StatusTooManyRequests:
					limited.Add(1)
				default:
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	all := slices.Concat(latencies...)
	slices.Sort(all)
	p50, p99 := time.Duration(0), time.Duration(0)
	if len(all) > 0 {
		p50, p99 = all[len(all)/2], all[len(all)*99/100]
	}
	if ok.Load() == 0 {
		l.t.Errorf("legitimate agents enrolled no machine at all (first error: %v)", firstErr)
	}
	if os.Getenv("KILN_FLOOD_REPORT_ONLY") == "" && limited.Load()+failed.Load() > 0 {
		// Each enrollment comes from its own address: none is over a per-source
		// limit, whatever the flooder does.
		l.t.Errorf("legitimate agents: %d enrollments refused 429, %d failed (first error: %v)", limited.Load(), failed.Load(), firstErr)
	}
	return fmt.Sprintf("%d legitimate agents got %.0f enrollments/s (%d in all; p50 %s, p99 %s; %d refused 429, %d failed)",
		l.agents, float64(ok.Load())/el, ok.Load(), p50.Round(time.Millisecond), p99.Round(time.Millisecond), limited.Load(), failed.Load())
}
