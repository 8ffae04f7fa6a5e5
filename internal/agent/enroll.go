package agent

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-attestation/attest"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/atomicfile"
)

// Enrollment, agent side. The agent makes its key pair locally (ECDSA P-256) and
// sends Kiln only a CSR, with an empty subject and no SANs: Kiln assigns the machine's
// name and puts it in the certificate (a CSR that asked for a name would have to ask
// for exactly the one Kiln assigns, which a generic token cannot tell in advance). On
// first contact the agent trusts the server only if the TLS chain contains the CA
// whose SHA-256 fingerprint it was given, and then pins that CA for every later call.
// Key, certificate and CA are kept in a directory of mode 0700 (the key 0600); the
// certificate is renewed, with a new key, at two thirds of its lifetime.

// DefaultDir is where the agent keeps its identity.
const DefaultDir = "/var/lib/kiln-agent"

// Files in the identity directory.
const (
	KeyFile    = "key.pem"
	CertFile   = "cert.pem"
	CAFile     = "ca.pem"
	ServerFile = "server"
)

// EnrollOptions configure Enroll.
type EnrollOptions struct {
	// Server is Kiln's HTTPS base URL (https://10.0.0.2:8443); empty: the one the
	// token names.
	Server string
	// CAFingerprint is the SHA-256 of Kiln's CA certificate (hex, colons allowed), from
	// `kiln ca show` or the kernel command line.
	CAFingerprint string
	// Token is the join token.
	Token string
	// Dir holds the identity (default DefaultDir).
	Dir string
	// Facts are reported to Kiln; nil: Facts().
	Facts map[string]any
	// Timeout bounds the enrollment request (default 60s).
	Timeout time.Duration
	// Key is the key to enroll; nil: a new P-256 key.
	Key *ecdsa.PrivateKey
	// PollInterval is the first wait between polls of an enrollment that waits for
	// an operator's approval (default 5s; it backs off to a minute).
	PollInterval time.Duration
	// OnPending, if set, is told each time Kiln answers that the enrollment waits.
	OnPending func(agentwire.EnrollPending)
	// OpenTPM opens the TPM for an enrollment Kiln wants TPM-bound (asked only
	// then); nil: the machine's TPM (/dev/tpmrm0). Tests give a swtpm.
	OpenTPM func() (*attest.TPM, error)
	// Dialer opens the TCP connections of the enrollment and of the calls made on its
	// transport afterwards; nil: a zero net.Dialer. Benchmarks set its LocalAddr so
	// that simulated agents on loopback come from distinct addresses, as machines
	// would (Kiln's rate limits are per source address).
	Dialer *net.Dialer
}

// Identity is an enrolled machine's key, certificate and pinned CA.
type Identity struct {
	Dir           string
	Server        string
	Machine       string
	Cert          *x509.Certificate
	CAFingerprint string

	tlsCert tls.Certificate
	cas     *x509.CertPool
	caRaw   []byte // the pinned CA, PEM
	// conn is the enrollment's transport when Kiln bound its connection to this
	// identity (see Enroll); NewMTLSTransport takes it over.
	conn *enrollConn
	// tpm is the TPM and AK of a TPM-bound enrollment, kept open for the re-quote of
	// every renewal (an AK lives as long as this agent: a restarted agent enrolls
	// again).
	tpm *tpmSession
}

// enrollConn is the transport an agent enrolled with, and the certificate it presents.
type enrollConn struct {
	transport *http.Transport
	cfg       *tls.Config
	dialer    *net.Dialer // nil: the default
	certs     *certSource
	mu        sync.Mutex
	next      *tls.Conn // the connection opened to enroll, until the transport takes it
}

// certSource is the client certificate a transport presents at its next handshake.
type certSource struct {
	mu   sync.Mutex
	cert tls.Certificate
}

func (c *certSource) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cert := c.cert
	return &cert, nil
}

func (c *certSource) set(cert tls.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cert = cert
}

// ServerError is an error answer from Kiln.
type ServerError struct {
	Status int
	Reason string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("kiln refused (%d %s): %s", e.Status, http.StatusText(e.Status), e.Reason)
}

// NormalizeFingerprint accepts hex with or without colons, any case, optionally
// prefixed "sha256:".
func NormalizeFingerprint(s string) (string, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "sha256:"), "SHA256:")
	s = strings.ToLower(strings.ReplaceAll(s, ":", ""))
	if _, err := hex.DecodeString(s); err != nil || len(s) != 64 {
		return "", fmt.Errorf("CA fingerprint: not a SHA-256 fingerprint (64 hex digits)")
	}
	return s, nil
}

func certFingerprint(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}

// PinnedTLSConfig trusts a server whose chain holds the CA with fingerprint fp (and
// whose certificate that CA issued for serverName, for server authentication).
func PinnedTLSConfig(serverName, fp string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		// Verification is done below, against the pinned CA found in the chain.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			var ca *x509.Certificate
			for _, c := range cs.PeerCertificates {
				if certFingerprint(c.Raw) == fp {
					ca = c
					break
				}
			}
			if ca == nil {
				return fmt.Errorf("server's certificate chain does not contain the CA with fingerprint %s (wrong server, or a man in the middle)", fp)
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: serverName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if err != nil {
				return fmt.Errorf("server certificate: %w", err)
			}
			return nil
		},
	}
}

// The enrollment connection. The agent opens the TLS connection first, then makes
// its CSR with the connection's channel binding in it: RFC 9266's tls-exporter value,
// in the CSR's challengePassword attribute, as EST (RFC 7030 section 3.5) links a CSR
// to its TLS session. The CSR's signature then proves that whoever is on this
// connection holds the key, so Kiln lets the connection speak for the machine once it
// has certified the key, and the agent's next calls need no second handshake. New
// connections present the machine certificate.

// NewKeyAndCSR makes a P-256 key and a CSR for it with no names: Kiln assigns them.
func NewKeyAndCSR() (*ecdsa.PrivateKey, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, "", err
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

func parseServerURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server %q: not an https:// URL", raw)
	}
	return u, nil
}

// TokenIssuer reads the server URL a join token names (its iss claim), without
// verifying it: the CA fingerprint is what makes the server trusted, not the token.
func TokenIssuer(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > 8<<10 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Iss
}

// Enroll enrolls this machine with Kiln and stores its identity in opts.Dir. Without
// opts.Server it uses the server URL written in the token.
func Enroll(ctx context.Context, opts EnrollOptions) (*Identity, error) {
	opts.Dir = cmp.Or(opts.Dir, DefaultDir)
	if err := secureDir(opts.Dir); err != nil {
		return nil, err
	}
	id, err := EnrollSession(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := id.save(id.tlsCert.PrivateKey.(crypto.Signer)); err != nil {
		id.Close()
		return nil, err
	}
	return id, nil
}

// EnrollSession enrolls without storing the identity (Enroll stores it). Kiln lets
// the connection it enrolled on go on as the machine: NewMTLSTransport takes it over
// (or Close drops it). If Kiln answers that the enrollment waits for an operator's
// approval, it polls until the request is decided (approval.go); opts.Timeout bounds
// each request, not that wait, which ctx bounds.
func EnrollSession(ctx context.Context, opts EnrollOptions) (*Identity, error) {
	if opts.Server == "" {
		opts.Server = TokenIssuer(opts.Token)
	}
	u, err := parseServerURL(opts.Server)
	if err != nil {
		return nil, err
	}
	fp, err := NormalizeFingerprint(opts.CAFingerprint)
	if err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	facts := opts.Facts
	if facts == nil {
		facts = Facts()
	}
	key := opts.Key
	if key == nil {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
	}
	var tpm *tpmSession
	defer func() {
		if tpm != nil {
			tpm.Close()
		}
	}()
	var evidence *agentwire.TPMEnrollment
	// Rounds: evidence asked, challenge, answer; approval (TOFU) asks for evidence
	// again. More is a server that goes in circles.
	for range 6 {
		id, pending, err := postBoundCSR(ctx, opts, u, fp, key, agentwire.EnrollPath, func(csr string) any {
			// An empty token asks for an operator's approval, if Kiln allows that.
			return agentwire.EnrollRequest{Token: opts.Token, CSR: csr, Facts: facts, TPM: evidence}
		})
		if pending == nil {
			if id != nil && tpm != nil {
				id.tpm, tpm = tpm, nil // the renewals re-quote with this AK
			}
			return id, err
		}
		switch pending.State {
		case agentwire.EnrollmentTPMEvidence:
			if tpm == nil {
				if tpm, err = openTPMSession(opts.OpenTPM); err != nil {
					return nil, fmt.Errorf("enroll with %s: Kiln asks for TPM attestation: %w", u.Host, err)
				}
			}
			evidence = tpm.evidence()
		case agentwire.EnrollmentTPMChallenge:
			if tpm == nil || pending.TPMChallenge == nil {
				return nil, fmt.Errorf("enroll with %s: a TPM challenge without TPM evidence sent", u.Host)
			}
			ans, err := tpm.answer(pending.TPMChallenge, true)
			if err != nil {
				return nil, fmt.Errorf("enroll with %s: %w", u.Host, err)
			}
			evidence = tpm.evidence()
			evidence.Answer = ans
		default:
			id, err := waitForApproval(ctx, opts, u, fp, key, pending)
			var pa *pendingAnswer
			if errors.As(err, &pa) && pa.State == agentwire.EnrollmentTPMEvidence {
				continue // approved, EK pinned: attest now
			}
			return id, err
		}
	}
	return nil, fmt.Errorf("enroll with %s: no certificate after 6 rounds of TPM enrollment", u.Host)
}

// postBoundCSR posts, on a new connection, the body made around a CSR for key bound to
// that connection, and reads Kiln's answer: an identity, or a pending request (202).
func postBoundCSR(ctx context.Context, opts EnrollOptions, u *url.URL, fp string, key *ecdsa.PrivateKey, path string, body func(csr string) any) (*Identity, *agentwire.EnrollPending, error) {
	cfg := PinnedTLSConfig(u.Hostname(), fp)
	// Nothing secret travels on this connection (see secretPath).
	cfg.CurvePreferences = classicalCurves
	conn := newEnrollConn(cfg, opts.Dialer)
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	tc, err := conn.dial(ctx, "tcp", hostPort(u))
	if err != nil {
		return nil, nil, fmt.Errorf("enroll with %s: %w", u.Host, err)
	}
	conn.next = tc
	st := tc.ConnectionState()
	binding, err := st.ExportKeyingMaterial(agentwire.ChannelBindingLabel, nil, agentwire.ChannelBindingBytes)
	if err != nil {
		tc.Close()
		return nil, nil, fmt.Errorf("enroll with %s: channel binding: %w", u.Host, err)
	}
	csr, err := agentwire.ChannelBoundCSR(key, binding)
	if err != nil {
		tc.Close()
		return nil, nil, err
	}
	client := &http.Client{Transport: conn.transport}
	data, _ := json.Marshal(body(csr))
	var resp agentwire.EnrollResponse
	var pending *agentwire.EnrollPending
	id, err := func() (*Identity, error) {
		if err := postEnrollJSON(ctx, client, u.String()+path, data, &resp); err != nil {
			var pe *pendingAnswer
			if errors.As(err, &pe) {
				pending = &pe.EnrollPending
				return nil, nil
			}
			return nil, fmt.Errorf("enroll with %s: %w", u.Host, err)
		}
		return identityFrom(opts.Dir, u.String(), key, &resp, fp)
	}()
	if err != nil || pending != nil || !resp.BoundConnection {
		conn.transport.CloseIdleConnections()
		conn.dropNext()
		return id, pending, err
	}
	// New connections present the machine certificate; the one enrolled on goes on.
	conn.certs.set(id.tlsCert)
	id.conn = conn
	return id, nil, nil
}

// Close drops the connection the identity was enrolled on, unless a transport took
// it over.
func (id *Identity) Close() {
	if id.conn != nil {
		id.conn.transport.CloseIdleConnections()
		id.conn = nil
	}
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "443")
}

// newEnrollConn is the transport an agent enrolls with; it presents the machine
// certificate on new connections once there is one. dialer may be nil.
func newEnrollConn(cfg *tls.Config, dialer *net.Dialer) *enrollConn {
	c := &enrollConn{certs: &certSource{}, cfg: cfg, dialer: dialer}
	cfg.GetClientCertificate = c.certs.get
	// HTTP/1.1: the agent's calls come one after another, and an HTTP/1.1 connection
	// costs both ends less than an HTTP/2 one.
	c.transport = &http.Transport{TLSClientConfig: cfg, DialTLSContext: c.dialTLS, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}
	return c
}

// dial opens a TLS connection with the transport's configuration.
func (c *enrollConn) dial(ctx context.Context, network, addr string) (*tls.Conn, error) {
	nc, err := (&tls.Dialer{NetDialer: c.dialer, Config: c.cfg}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return nc.(*tls.Conn), nil
}

// dialTLS is the transport's dialer: the enrollment connection first, then new ones.
func (c *enrollConn) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	next := c.next
	c.next = nil
	c.mu.Unlock()
	if next != nil {
		return next, nil
	}
	return c.dial(ctx, network, addr)
}

func (c *enrollConn) dropNext() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next != nil {
		c.next.Close()
		c.next = nil
	}
}

func postEnrollJSON(ctx context.Context, c *http.Client, u string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode == http.StatusAccepted {
		var p pendingAnswer
		if err := json.Unmarshal(data, &p.EnrollPending); err != nil || p.ID == "" {
			return fmt.Errorf("a 202 answer without a request id: %s", truncateLine(string(data)))
		}
		return &p
	}
	if res.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &ServerError{Status: res.StatusCode, Reason: e.Error}
	}
	return json.Unmarshal(data, out)
}

// identityFrom checks Kiln's answer: the certificate is for our key, issued by the
// pinned CA, and the CA chain is the pinned one.
func identityFrom(dir, server string, key crypto.Signer, r *agentwire.EnrollResponse, fp string) (*Identity, error) {
	cb, _ := pem.Decode([]byte(r.Certificate))
	if cb == nil {
		return nil, errors.New("enroll: the answer has no certificate")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("enroll: certificate: %w", err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, errors.New("enroll: the certificate is not for this machine's key")
	}
	cas, caRaw, ca, err := pinnedPool([]byte(r.CAChain), fp)
	if err != nil {
		return nil, err
	}
	// The answer came over a connection authenticated by the pinned CA, from Kiln,
	// which is that CA: checking the CA's signature on the certificate again would cost
	// an ECDSA verification and prove nothing more. What is checked is that it is what
	// the agent asked for: its key (above), under the pinned CA's name, for client
	// authentication, valid now.
	now := time.Now()
	switch {
	case !bytes.Equal(cert.RawIssuer, ca.RawSubject):
		return nil, fmt.Errorf("enroll: the certificate is not from the pinned CA (issuer %q)", cert.Issuer)
	case !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
		return nil, errors.New("enroll: the certificate is not for client authentication")
	case now.Before(cert.NotBefore.Add(-5*time.Minute)) || now.After(cert.NotAfter):
		return nil, fmt.Errorf("enroll: the certificate is valid from %s to %s, not now (is this machine's clock right?)", cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return &Identity{Dir: dir, Server: server, Machine: cert.Subject.CommonName, Cert: cert, CAFingerprint: fp,
		tlsCert: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, cas: cas, caRaw: caRaw}, nil
}

// pinnedPool finds the pinned CA in a PEM chain and returns a pool holding only it.
func pinnedPool(chainPEM []byte, fp string) (*x509.CertPool, []byte, *x509.Certificate, error) {
	rest := chainPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, nil, nil, fmt.Errorf("CA chain does not contain the CA with fingerprint %s", fp)
		}
		if b.Type != "CERTIFICATE" || certFingerprint(b.Bytes) != fp {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, nil, err
		}
		pool := x509.NewCertPool()
		pool.AddCert(c)
		return pool, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), c, nil
	}
}

func samePublicKey(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// secureDir creates dir with mode 0700, or tightens an existing one to it.
func secureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("identity directory: %w", err)
	}
	return nil
}

// save writes key and certificate: new files first, then renames, key before
// certificate; Load completes a renewal interrupted between the two renames.
func (id *Identity) save(key crypto.Signer) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CAFile, id.caRaw, 0o644},
		{ServerFile, []byte(id.Server + "\n"), 0o644},
		{KeyFile + ".new", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600},
		{CertFile + ".new", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw}), 0o600},
	}
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(id.Dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("store identity: %w", err)
		}
	}
	for _, n := range []string{KeyFile, CertFile} {
		if err := os.Rename(filepath.Join(id.Dir, n+".new"), filepath.Join(id.Dir, n)); err != nil {
			return fmt.Errorf("store identity: %w", err)
		}
	}
	return nil
}

// Load reads the identity stored in dir.
func Load(dir string) (*Identity, error) {
	read := func(n string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("identity in %s: %w", dir, err)
		}
		return b, nil
	}
	keyPEM, err := read(KeyFile)
	if err != nil {
		return nil, err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("identity in %s: %s is not PEM", dir, KeyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %s: %w", dir, KeyFile, err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("identity in %s: unsupported key", dir)
	}
	cert, err := loadCertFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %w", dir, err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		// A renewal stopped between its two renames: the new certificate is waiting.
		c2, err2 := loadCertFile(filepath.Join(dir, CertFile+".new"))
		if err2 != nil || !samePublicKey(c2.PublicKey, key.Public()) {
			return nil, fmt.Errorf("identity in %s: %s does not match %s; enroll again", dir, CertFile, KeyFile)
		}
		if err := os.Rename(filepath.Join(dir, CertFile+".new"), filepath.Join(dir, CertFile)); err != nil {
			return nil, err
		}
		cert = c2
	}
	caPEM, err := read(CAFile)
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(caPEM)
	if cb == nil {
		return nil, fmt.Errorf("identity in %s: %s is not PEM", dir, CAFile)
	}
	fp := certFingerprint(cb.Bytes)
	cas, caRaw, _, err := pinnedPool(caPEM, fp)
	if err != nil {
		return nil, err
	}
	server, err := read(ServerFile)
	if err != nil {
		return nil, err
	}
	return &Identity{Dir: dir, Server: strings.TrimSpace(string(server)), Machine: cert.Subject.CommonName, Cert: cert, CAFingerprint: fp,
		tlsCert: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, cas: cas, caRaw: caRaw}, nil
}

func loadCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(b)
	if cb == nil {
		return nil, fmt.Errorf("%s is not PEM", filepath.Base(path))
	}
	return x509.ParseCertificate(cb.Bytes)
}

// TLSConfig presents the machine certificate and trusts only the pinned CA.
func (id *Identity) TLSConfig() *tls.Config {
	u, _ := url.Parse(id.Server)
	host := ""
	if u != nil {
		host = u.Hostname()
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: id.cas, ServerName: host, Certificates: []tls.Certificate{id.tlsCert}}
}

// HTTPClient makes mTLS calls to Kiln as this machine.
func (id *Identity) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: id.TLSConfig(), ForceAttemptHTTP2: true}}
}

// RenewAt is two thirds into the certificate's lifetime.
func (id *Identity) RenewAt() time.Time {
	nb, na := id.Cert.NotBefore, id.Cert.NotAfter
	return nb.Add(na.Sub(nb) * 2 / 3)
}

// Renew asks Kiln for a new certificate with a new key, over mTLS with the current
// one, and stores it. The old certificate stops working at once.
func (id *Identity) Renew(ctx context.Context) (*Identity, error) {
	key, csr, err := NewKeyAndCSR()
	if err != nil {
		return nil, err
	}
	c := id.HTTPClient(60 * time.Second)
	defer c.CloseIdleConnections()
	req := agentwire.RenewRequest{CSR: csr}
	var resp agentwire.EnrollResponse
	for attempt := 0; ; attempt++ {
		body, _ := json.Marshal(req)
		err := postEnrollJSON(ctx, c, strings.TrimRight(id.Server, "/")+agentwire.RenewPath, body, &resp)
		var pa *pendingAnswer
		if !errors.As(err, &pa) || pa.State != agentwire.EnrollmentTPMChallenge || pa.TPMChallenge == nil || attempt > 0 {
			if err != nil {
				return nil, fmt.Errorf("renew: %w", err)
			}
			break
		}
		// A TPM-enrolled machine re-quotes with its AK over Kiln's nonce.
		if id.tpm == nil {
			return nil, errors.New("renew: Kiln asks for a TPM re-quote, and this agent holds no attestation key (it was restarted): enroll again")
		}
		if req.TPMAnswer, err = id.tpm.answer(pa.TPMChallenge, false); err != nil {
			return nil, fmt.Errorf("renew: %w", err)
		}
	}
	next, err := identityFrom(id.Dir, id.Server, key, &resp, id.CAFingerprint)
	if err != nil {
		return nil, err
	}
	if next.Machine != id.Machine {
		return nil, fmt.Errorf("renew: Kiln issued a certificate for %q, not %q", next.Machine, id.Machine)
	}
	next.tpm = id.tpm
	if err := next.save(key); err != nil {
		return nil, err
	}
	return next, nil
}

// RenewIfDue renews when now is past RenewAt.
func (id *Identity) RenewIfDue(ctx context.Context, now time.Time) (*Identity, bool, error) {
	if now.Before(id.RenewAt()) {
		return id, false, nil
	}
	next, err := id.Renew(ctx)
	if err != nil {
		return id, false, err
	}
	return next, true, nil
}

// MTLSTransport is the agent's way to Kiln once enrolled (it implements the agent's
// Transport): an HTTP client that presents the machine's current certificate, trusts
// only the pinned CA, and follows renewals.
type MTLSTransport struct {
	mu     sync.Mutex
	id     *Identity
	certs  *certSource
	client *http.Client
}

// NewMTLSTransport makes an MTLSTransport for an identity.
func NewMTLSTransport(id *Identity) *MTLSTransport {
	t := &MTLSTransport{id: id}
	// The certificate is looked up at each handshake, so a renewal takes effect on the
	// next connection.
	conn := id.conn
	id.conn = nil
	if conn == nil {
		cfg := id.TLSConfig()
		cfg.Certificates = nil
		cfg.CurvePreferences = classicalCurves
		conn = newEnrollConn(cfg, nil)
		conn.certs.set(id.tlsCert)
	}
	t.certs = conn.certs
	// Configs and secrets go over a post-quantum key exchange, on connections of their own.
	pqCfg := conn.cfg.Clone()
	pqCfg.CurvePreferences = nil // Go's default: X25519MLKEM768 first
	pq := &http.Transport{TLSClientConfig: pqCfg, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}
	t.client = &http.Client{Timeout: 5 * time.Minute, Transport: &splitTransport{plain: conn.transport, secret: pq}}
	return t
}

// classicalCurves is the key exchange of the agent's connections that carry no
// secret: ECDHE on P-256, the cheapest on both sides (X25519MLKEM768 costs the server
// and the agent ~0.14 ms each per handshake here, about a third of an enrollment).
var classicalCurves = []tls.CurveID{tls.CurveP256}

// secretPath tells the requests whose answers can carry a secret: rendered configs
// (they may embed secrets) and secret handles. They go over a post-quantum key
// exchange (X25519MLKEM768), so that a recording of the traffic is no use to a
// future quantum computer; the rest of the agent API (enrollment, facts, the
// workflow and its reports, renewal) carries nothing that outlives its validity.
func secretPath(p string) bool {
	return strings.HasPrefix(p, "/config/") || strings.HasPrefix(p, "/secret-handles/")
}

// splitTransport sends secretPath requests through secret, the others through plain.
type splitTransport struct {
	plain, secret *http.Transport
}

func (s *splitTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if secretPath(r.URL.Path) {
		return s.secret.RoundTrip(r)
	}
	return s.plain.RoundTrip(r)
}

func (s *splitTransport) CloseIdleConnections() {
	s.plain.CloseIdleConnections()
	s.secret.CloseIdleConnections()
}

// Client is the mTLS client.
func (t *MTLSTransport) Client() *http.Client { return t.client }

// BaseURL is Kiln's URL.
func (t *MTLSTransport) BaseURL() string { return strings.TrimRight(t.Identity().Server, "/") }

// Identity is the current identity.
func (t *MTLSTransport) Identity() *Identity {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.id
}

// Renew renews the certificate and switches to the new one. Connections made with the
// old certificate are closed: Kiln refuses it from now on.
func (t *MTLSTransport) Renew(ctx context.Context) error {
	next, err := t.Identity().Renew(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.id = next
	t.mu.Unlock()
	t.certs.set(next.tlsCert)
	t.client.CloseIdleConnections()
	return nil
}

// RunRenewal keeps the certificate renewed until ctx ends: it sleeps until two thirds
// of the lifetime, renews, and on failure retries every minute (an expired certificate
// cannot renew: the machine must enroll again).
func (t *MTLSTransport) RunRenewal(ctx context.Context, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for {
		id := t.Identity()
		wait := time.Until(id.RenewAt())
		if wait < 0 {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if err := t.Renew(ctx); err != nil {
			if time.Now().After(id.Cert.NotAfter) {
				return fmt.Errorf("certificate expired before it could be renewed: %w", err)
			}
			log.Warn("certificate renewal failed; retrying in a minute", "machine", id.Machine, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Minute):
			}
			continue
		}
		log.Info("certificate renewed", "machine", id.Machine, "not_after", t.Identity().Cert.NotAfter)
	}
}

// CmdlineEnrollment reads the enrollment parameters Kiln puts on the agent's kernel
// command line: kiln.server, kiln.ca_fingerprint and kiln.token.
func CmdlineEnrollment(cmdline string) (server, caFingerprint, token string) {
	c := ParseCmdline(cmdline)
	return c["kiln.server"], c["kiln.ca_fingerprint"], c["kiln.token"]
}
