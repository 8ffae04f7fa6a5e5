package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/agent"
	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/gctune"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/store/sqlstore"
)

// BenchmarkEnroll measures the server side of an enrollment, in process: token
// verification, policy, CSR check, signing and the store transaction (token use,
// machine creation, replay record, audit entry, event), on SQLite.
func BenchmarkEnroll(b *testing.B) {
	e := newEnv(b)
	tok := e.token(TokenRequest{MaxUses: MaxTokenUses, TTL: "24h", Policy: []string{"facts.cpus >= 1"}})
	reqs := make([]*EnrollRequest, b.N)
	for i := range reqs {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		reqs[i] = &EnrollRequest{Token: tok, CSR: csrPEM(b, nil, key), Facts: facts(benchMAC(i), "cpus", 8)}
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			if _, err := e.srv.Enroll(context.Background(), reqs[i], loopback); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Minutes(), "enroll/min")
}

func benchMAC(i int) string {
	return net.HardwareAddr{0x52, 0x54, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}.String()
}

// BenchmarkEnrollHTTPS is the load generator of `make bench-enroll`: simulated agents,
// KILN_BENCH_CLIENTS of them at a time (default 32), each making a P-256 key and a
// CSR, enrolling over real HTTPS on loopback (a new TLS connection, as a new machine
// would) and making one mTLS call (GET /agent/v1/self) with its new certificate.
//
// The server runs in its own process (this test binary, re-executed in server mode),
// on SQLite and on PostgreSQL, so that its CPU time can be measured apart from the
// agents': client and server share the machine's cores. With KILN_BENCH_ENROLL_URL,
// KILN_BENCH_ENROLL_TOKEN and KILN_BENCH_ENROLL_CA (a PEM file) it loads an external
// `kiln serve` instead (and measures its CPU if KILN_BENCH_ENROLL_PID is set).
//
// It reports enrollments per minute and the p50/p99 latency of enroll + mTLS call.
// keygen=inline: each agent makes its key on the spot (the whole cost, as agents
// would); keygen=ahead: keys are made before the clock starts. keygen-µs is what a
// key and CSR cost an agent; server-cpu-µs/op is the server's CPU time per
// enrollment (both handshakes, the enrollment and the mTLS call), and
// server-max-enroll/min what that allows on this machine's cores with the agents
// elsewhere.
func BenchmarkEnrollHTTPS(b *testing.B) {
	clients := 32
	if v, err := strconv.Atoi(os.Getenv("KILN_BENCH_CLIENTS")); err == nil && v > 0 {
		clients = v
	}
	if url := os.Getenv("KILN_BENCH_ENROLL_URL"); url != "" {
		pem, err := os.ReadFile(os.Getenv("KILN_BENCH_ENROLL_CA"))
		if err != nil {
			b.Fatal("KILN_BENCH_ENROLL_CA: ", err)
		}
		fp, err := caFingerprintOfPEM(pem)
		if err != nil {
			b.Fatal("KILN_BENCH_ENROLL_CA: ", err)
		}
		pid, _ := strconv.Atoi(os.Getenv("KILN_BENCH_ENROLL_PID"))
		for _, m := range benchModes {
			b.Run(fmt.Sprintf("store=external/keygen=%s/call=%s/clients=%d", m.keygen, m.call, clients), func(b *testing.B) {
				benchHTTPS(b, benchTarget{url: url, token: os.Getenv("KILN_BENCH_ENROLL_TOKEN"), caFingerprint: fp, pid: pid}, clients, m.keygen == "inline", m.call == "reconnect")
			})
		}
		return
	}
	for _, storeName := range []string{"sqlite", "postgres"} {
		for _, m := range benchModes {
			b.Run(fmt.Sprintf("store=%s/keygen=%s/call=%s/clients=%d", storeName, m.keygen, m.call, clients), func(b *testing.B) {
				spec := "sqlite:" + b.TempDir()
				if storeName == "postgres" {
					spec = "postgres:" + pgtest.NewDatabase(b)
				}
				benchHTTPS(b, startBenchServer(b, spec), clients, m.keygen == "inline", m.call == "reconnect")
			})
		}
	}
}

// benchModes: keygen=ahead|inline (keys made before the clock starts, or by each agent
// on the spot); call=bound (the mTLS call on the enrollment connection, as the agent
// makes it) or reconnect (on a new connection with the machine certificate: two
// handshakes, as before connections were bound).
var benchModes = []struct{ keygen, call string }{
	{"ahead", "bound"}, {"inline", "bound"}, {"ahead", "reconnect"},
}

// benchTarget is a server to load.
type benchTarget struct {
	url, token    string
	caFingerprint string
	pid           int // for CPU accounting; 0: unknown
}

// benchServerEnv selects server mode in TestMain: "sqlite:DIR" or "postgres:URL".
const benchServerEnv = "KILN_ENROLL_BENCH_SERVE"

// benchServerHello is what the server process prints when it is ready.
type benchServerHello struct {
	URL, Token, CA string
}

// startBenchServer runs the enrollment service in a child process.
func startBenchServer(b *testing.B, spec string) benchTarget {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"="+spec)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("bench server: %v", err)
		}
	})
	var hello benchServerHello
	if err := json.NewDecoder(stdout).Decode(&hello); err != nil {
		b.Fatal("bench server: ", err)
	}
	fp, err := caFingerprintOfPEM([]byte(hello.CA))
	if err != nil {
		b.Fatal("bench server: ", err)
	}
	return benchTarget{url: hello.URL, token: hello.Token, caFingerprint: fp, pid: cmd.Process.Pid}
}

// caFingerprintOfPEM is the fingerprint agents pin: that of the first certificate.
func caFingerprintOfPEM(b []byte) (string, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", errors.New("no PEM certificate")
	}
	return Fingerprint(blk.Bytes), nil
}

// runBenchServer is server mode: serve until standard input closes.
func runBenchServer(spec string) error {
	ctx := context.Background()
	gctune.Tune(slog.New(slog.DiscardHandler)) // as kiln serve

	kind, arg, _ := strings.Cut(spec, ":")
	var st store.Store
	var err error
	dataDir, err := os.MkdirTemp("", "kiln-enroll-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	switch kind {
	case "sqlite":
		st, err = sqlite.Open(ctx, arg, sqlstore.Options{})
	case "postgres":
		st, err = postgres.Open(ctx, arg, sqlstore.Options{})
	default:
		err = fmt.Errorf("%s: %q is not sqlite:DIR or postgres:URL", benchServerEnv, spec)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	if err := seedStore(st); err != nil {
		return err
	}
	srv, err := New(ctx, st, Config{DataDir: dataDir, ServerSANs: []string{"127.0.0.1"}})
	if err != nil {
		return err
	}
	tok, err := srv.CreateToken(ctx, "bench", TokenRequest{Profile: "worker", MaxUses: MaxTokenUses, TTL: "24h"})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	srv.RegisterAgent(mux) // as kiln serve: each route behind AgentAuth
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, TLSConfig: srv.TLSConfig(), ConnContext: ConnContext, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	go hs.ServeTLS(ln, "", "")
	json.NewEncoder(os.Stdout).Encode(benchServerHello{URL: "https://" + ln.Addr().String(), Token: tok.Token, CA: string(srv.CACertificatePEM())})
	if path := os.Getenv("KILN_ENROLL_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	io.Copy(io.Discard, os.Stdin)
	return hs.Close()
}

// cpuTime is a process's user+system CPU time, from /proc/PID/stat.
func cpuTime(pid int) (time.Duration, bool) {
	if pid == 0 {
		return 0, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, false
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, true // USER_HZ is 100 on Linux
}

// benchAgent is a simulated agent's key, made ahead of the clock or inline.
type benchAgent struct {
	key *ecdsa.PrivateKey
}

func newBenchAgent(b *testing.B) benchAgent {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return benchAgent{key: key}
}

func benchHTTPS(b *testing.B, target benchTarget, clients int, inline, reconnect bool) {
	// Key generation cost, measured apart.
	const samples = 200
	t0 := time.Now()
	for i := 0; i < samples; i++ {
		newBenchAgent(b)
	}
	keygen := time.Since(t0) / samples

	var ahead []benchAgent
	if !inline {
		ahead = make([]benchAgent, b.N)
		for i := range ahead {
			ahead[i] = newBenchAgent(b)
		}
	}
	b.ReportMetric(float64(keygen.Microseconds()), "keygen-µs")
	runAgents(b, clients, target.pid, "enroll/min", func(i int, mac string) error {
		a := benchAgent{}
		if inline {
			a = newBenchAgent(b)
		} else {
			a = ahead[i]
		}
		return benchOneAgent(target, a, mac, reconnect)
	})
}

// runAgents runs b.N simulated agents, clients at a time, and reports the rate (in
// unit), the
// latency of one agent (p50/p99), the agents' CPU per agent (this process) and the
// server's (process pid, if not 0).
//
// The agents' process collects garbage at 400 % as kiln serve does (as many agents
// in one process allocate as much as a server): a real agent, a process of its own
// on its own machine, hardly collects during an enrollment.
func runAgents(b *testing.B, clients, pid int, unit string, agent func(i int, mac string) error) {
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	// A different MAC range per run, so that runs against one server create new machines.
	var base [2]byte
	rand.Read(base[:])
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	runtime.GC()
	b.ResetTimer()
	cpu0, haveCPU := cpuTime(pid)
	self0, _ := cpuTime(os.Getpid())
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				t := time.Now()
				mac := net.HardwareAddr{0x52, base[0], base[1], byte(i >> 16), byte(i >> 8), byte(i)}.String()
				if err := agent(i, mac); err != nil {
					if failed.Add(1) == 1 {
						b.Error(err)
					}
					continue
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := cpuTime(pid)
	self1, _ := cpuTime(os.Getpid())
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d of %d agents failed", failed.Load(), b.N)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(float64(len(lat))*p))] }
	b.ReportMetric(float64(b.N)/elapsed.Minutes(), unit)
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	// The agents' CPU (this process, keys made ahead excluded): with the server's, what
	// an enrollment costs the machine.
	b.ReportMetric(float64((self1-self0).Microseconds())/float64(b.N), "agent-cpu-µs/op")
	if haveCPU && cpu1 > cpu0 {
		per := (cpu1 - cpu0) / time.Duration(b.N)
		b.ReportMetric(float64(per.Microseconds()), "server-cpu-µs/op")
		b.ReportMetric(float64(runtime.NumCPU())*float64(time.Minute)/float64(per), "server-max-enroll/min")
	}
}

// benchOneAgent is one simulated agent: the agent's own enrollment code
// (agent.EnrollSession: TLS connection, CSR with its channel binding, POST /enroll,
// checking the certificate against the pinned CA) and one mTLS call through the
// agent's transport, on the connection it enrolled on as the agent makes it. With
// reconnect, the call is made on a new connection presenting the machine certificate
// instead (two handshakes).
func benchOneAgent(target benchTarget, a benchAgent, mac string, reconnect bool) error {
	ctx := context.Background()
	id, err := agent.EnrollSession(ctx, agent.EnrollOptions{Server: target.url, CAFingerprint: target.caFingerprint,
		Token: target.token, Key: a.key, Facts: facts(mac, "cpus", 8), Timeout: time.Minute})
	if err != nil {
		return err
	}
	if reconnect {
		id.Close()
	}
	tr := agent.NewMTLSTransport(id)
	defer tr.Client().CloseIdleConnections()
	return readOK(tr.Client().Get(target.url + "/agent/v1/self"))
}

// readOK reads and closes a response, which must be a 200.
func readOK(res *http.Response, err error) error {
	if err != nil {
		return err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d", res.Request.Method, res.Request.URL.Path, res.StatusCode)
	}
	return nil
}

// BenchmarkEnrollPeer is the peer of BenchmarkEnrollHTTPS (scripts/bench-enroll.sh
// runs it against nginx): simulated agents doing an agent's transport work, and
// nothing else, against a server that answers both requests with a constant body.
// Each agent opens a TLS connection to the pinned CA's server exactly as
// agent.EnrollSession does (ECDHE P-256, the chain checked against the pinned CA),
// makes a CSR with the connection's channel binding, POSTs the same enrollment body
// to /enroll and GETs /agent/v1/self on the same connection. The rate it reaches is
// what any server costs on this machine for the TLS and HTTP of an enrollment;
// Kiln's enrollments/min divided by it is how much of that Kiln's enrollment work
// (token, policy, CSR check, signing, store) leaves. KILN_BENCH_PEER_URL is the
// server's base URL, KILN_BENCH_PEER_CA its CA (PEM); the script measures the
// server's CPU (nginx runs several processes).
func BenchmarkEnrollPeer(b *testing.B) {
	url := os.Getenv("KILN_BENCH_PEER_URL")
	if url == "" {
		b.Skip("KILN_BENCH_PEER_URL is not set (scripts/bench-enroll.sh sets it)")
	}
	pemCA, err := os.ReadFile(os.Getenv("KILN_BENCH_PEER_CA"))
	if err != nil {
		b.Fatal("KILN_BENCH_PEER_CA: ", err)
	}
	fp, err := caFingerprintOfPEM(pemCA)
	if err != nil {
		b.Fatal(err)
	}
	clients := 32
	if v, err := strconv.Atoi(os.Getenv("KILN_BENCH_CLIENTS")); err == nil && v > 0 {
		clients = v
	}
	b.Run(fmt.Sprintf("keygen=ahead/clients=%d", clients), func(b *testing.B) {
		keys := make([]*ecdsa.PrivateKey, b.N)
		for i := range keys {
			keys[i] = newBenchAgent(b).key
		}
		host := strings.TrimPrefix(url, "https://")
		runAgents(b, clients, 0, "agents/min", func(i int, mac string) error {
			return peerAgent(host, fp, keys[i], mac)
		})
	})
}

// peerAgent is one agent's transport work against the peer.
func peerAgent(host, fp string, key *ecdsa.PrivateKey, mac string) error {
	cfg := agent.PinnedTLSConfig(strings.Split(host, ":")[0], fp)
	cfg.CurvePreferences = []tls.CurveID{tls.CurveP256}
	nc, err := (&tls.Dialer{Config: cfg}).Dial("tcp", host)
	if err != nil {
		return err
	}
	conn := nc.(*tls.Conn)
	st := conn.ConnectionState()
	cb, err := st.ExportKeyingMaterial(ChannelBindingLabel, nil, channelBindingBytes)
	if err != nil {
		conn.Close()
		return err
	}
	csr, err := agentwire.ChannelBoundCSR(key, cb)
	if err != nil {
		conn.Close()
		return err
	}
	used := false
	tr := &http.Transport{DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
		if used {
			return nil, errors.New("peer: a second connection")
		}
		used = true
		return conn, nil
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: time.Minute}
	// A token of the length of Kiln's (an EdDSA JWT with its claims).
	body, _ := json.Marshal(map[string]any{"token": strings.Repeat("x", 420), "csr": csr, "facts": facts(mac, "cpus", 8)})
	if err := readOK(c.Post("https://"+host+"/enroll", "application/json", bytes.NewReader(body))); err != nil {
		return err
	}
	return readOK(c.Get("https://" + host + "/agent/v1/self"))
}
