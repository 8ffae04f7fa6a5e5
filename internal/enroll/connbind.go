package enroll

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Enrollment connections. Once Kiln has certified a key on a connection whose client
// proved it holds that key, the connection speaks for the machine, so the agent's
// first calls (its report, its workflow) need no second handshake, which would cost
// both sides as much CPU as the enrollment itself. Every new connection presents the
// machine certificate. The proof is either
//   - the CSR's channel binding (csr.go): the CSR's signature covers this
//     connection's exporter value; the agent's way, or
//   - a client certificate presented in the handshake (any, self-signed will do) for
//     the CSR's key: the handshake proves the key; for clients that cannot read
//     their connection's exporter (curl with a self-signed certificate).
//
// The binding lives and dies with its connection, and each request on it is checked
// as a presented machine certificate is: the certificate issued on the connection
// must still be the machine's current one (a revocation, renewal or re-enrollment
// ends the binding at once) and unexpired. Without a proof the connection is not
// bound: the enrollment succeeds and the agent reconnects.

type connKey struct{}

// connState is what Kiln knows about one TLS connection: the certificate an
// enrollment on it bound it to, if any.
type connState struct {
	bound atomic.Pointer[boundCert]
}

// boundCert is the machine certificate issued on a connection (AgentAuth also uses it
// for the one a request presents).
type boundCert struct {
	machine     string
	fingerprint string
	serial      string
	notBefore   time.Time
	notAfter    time.Time
}

// ConnContext is the http.Server ConnContext of the server that serves enrollment and
// the agent API: it gives each connection the state that enrollment binds.
func ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &connState{})
}

func connStateFrom(ctx context.Context) *connState {
	cs, _ := ctx.Value(connKey{}).(*connState)
	return cs
}

// spkiHash is the SHA-256 of a certificate's public key, hex, as csrInfo.keyHash.
func spkiHash(c *x509.Certificate) string {
	h := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(h[:])
}

// bindConnection binds the request's connection to the certificate just issued, if
// the client proved on it that it holds the certified key (the CSR's channel
// binding, or a client certificate of that key). It reports whether it did.
func bindConnection(r *http.Request, resp *EnrollResponse) bool {
	cs := connStateFrom(r.Context())
	if cs == nil || r.TLS == nil || resp.issued == nil {
		return false
	}
	proven := resp.channelBound ||
		len(r.TLS.PeerCertificates) > 0 && spkiHash(r.TLS.PeerCertificates[0]) == resp.issued.keyHash
	if !proven {
		return false
	}
	cs.bound.Store(&boundCert{machine: resp.Machine, fingerprint: resp.issued.fingerprint, serial: resp.Serial,
		notBefore: resp.issued.notBefore, notAfter: resp.NotAfter})
	return true
}

// boundIdentity is the machine a request's connection was bound to by an enrollment
// on it, or nil. (A connection's client certificate, if any, is that of its handshake:
// it cannot change under a binding.)
func boundIdentity(ctx context.Context) *boundCert {
	if cs := connStateFrom(ctx); cs != nil {
		return cs.bound.Load()
	}
	return nil
}
