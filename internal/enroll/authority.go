package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// The CA and the token signing key live in the store as one object of an internal kind
// (not in resource.Kinds, so the operator API neither lists nor edits it), with both
// private keys sealed under the key-encryption key. Keeping them in the store rather
// than in files means that replicas on one PostgreSQL share them with no copying (the
// first replica to start creates them inside a write transaction; the others read
// them), and that a backup of the store carries them, still encrypted. The KEK is what
// each replica must be given: the same key file (or KILN_KEK) everywhere.
const (
	authorityKind = "EnrollAuthority"
	authorityName = "default"
)

// authoritySpec is the stored form of the CA.
type authoritySpec struct {
	// Certificate is PEM: Kiln's issuing CA first, then (for an imported intermediate)
	// the certificates above it.
	Certificate string `json:"certificate"`
	// Key and TokenKey are sealed PKCS#8 private keys: the CA's and the ed25519 key that
	// signs join tokens (never the CA's key: a token leak must not be a CA leak).
	Key      string `json:"key"`
	TokenKey string `json:"tokenKey"`
	KEKID    string `json:"kekId"`
	Imported bool   `json:"imported,omitempty"`
}

// authority is the opened CA.
type authority struct {
	cert        *x509.Certificate
	chain       []*x509.Certificate // cert first
	chainPEM    []byte
	key         crypto.Signer
	fingerprint string // SHA-256 of cert's DER, lower-case hex
	pool        *x509.CertPool
	tokenKey    ed25519.PrivateKey
	tokenPub    ed25519.PublicKey
	imported    bool
	fast        *clientSigner // nil: machine certificates through x509.CreateCertificate
}

// Fingerprint returns the SHA-256 of a certificate's DER as lower-case hex: the form
// agents pin (--ca-fingerprint) and the form stored in status.certFingerprint.
func Fingerprint(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}

// NormalizeFingerprint accepts a SHA-256 fingerprint as hex with or without colons, in
// either case, optionally prefixed "sha256:", and returns lower-case hex.
func NormalizeFingerprint(s string) (string, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "sha256:"), "SHA256:")
	s = strings.ToLower(strings.ReplaceAll(s, ":", ""))
	if len(s) != 64 {
		return "", fmt.Errorf("not a SHA-256 fingerprint (64 hex digits)")
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("not a SHA-256 fingerprint (64 hex digits)")
	}
	return s, nil
}

// importedCA is an operator's intermediate CA, checked.
type importedCA struct {
	certs []*x509.Certificate
	key   crypto.Signer
}

// parseImport checks an operator-supplied CA: certPEM holds the CA certificate first,
// optionally followed by its issuers; keyPEM its private key (PKCS#8, SEC 1 or PKCS#1).
func parseImport(certPEM, keyPEM []byte, now time.Time) (*importedCA, error) {
	var certs []*x509.Certificate
	rest := certPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("CA certificate file: unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA certificate file: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("CA certificate file: no PEM CERTIFICATE block")
	}
	ca := certs[0]
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return nil, fmt.Errorf("CA certificate %q is not a CA (basicConstraints CA:TRUE missing)", ca.Subject)
	}
	if ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA certificate %q may not sign certificates (no keyCertSign key usage)", ca.Subject)
	}
	if now.After(ca.NotAfter) || now.Before(ca.NotBefore) {
		return nil, fmt.Errorf("CA certificate %q is valid from %s to %s, not now", ca.Subject, ca.NotBefore.Format(time.RFC3339), ca.NotAfter.Format(time.RFC3339))
	}
	for i := 1; i < len(certs); i++ {
		if err := certs[i-1].CheckSignatureFrom(certs[i]); err != nil {
			return nil, fmt.Errorf("CA certificate file: certificate %d is not signed by certificate %d: %v", i, i+1, err)
		}
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("CA key file: no PEM block")
	}
	key, err := parsePrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA key file: %w", err)
	}
	if err := checkKeyStrength(key.Public()); err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !publicKeysEqual(key.Public(), ca.PublicKey) {
		return nil, errors.New("CA key file: the key does not belong to the CA certificate")
	}
	return &importedCA{certs: certs, key: key}, nil
}

func parsePrivateKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		return s, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS#8, SEC 1 or PKCS#1 private key")
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// openAuthority loads the CA from the store, creating it (or importing imp) on first
// start. The check and the create are one write transaction, so two replicas starting
// together end up with one CA.
//
// If the stored keys are sealed under one of others (the previous KEK after a key
// rotation that did not finish re-sealing), they are re-sealed under sl in the same
// transaction.
func openAuthority(ctx context.Context, st store.Store, sl *sealer, others []*sealer, imp *importedCA, now time.Time) (*authority, error) {
	var spec authoritySpec
	err := st.Update(ctx, func(tx store.Tx) error {
		obj, err := tx.Get(ctx, authorityKind, authorityName)
		if err == nil {
			if err := json.Unmarshal(obj.Spec, &spec); err != nil {
				return fmt.Errorf("stored CA: %w", err)
			}
			if imp != nil {
				b, _ := pem.Decode([]byte(spec.Certificate))
				if b == nil || !bytes.Equal(b.Bytes, imp.certs[0].Raw) {
					return errors.New("import CA: this Kiln already has another CA; importing a CA is only possible on first start (before any certificate is issued)")
				}
			}
			for _, o := range others {
				if spec.KEKID == o.id && o.id != sl.id {
					return resealStored(ctx, tx, obj, &spec, o, sl, "system", now)
				}
			}
			return nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		spec, err = newAuthoritySpec(sl, imp, now)
		if err != nil {
			return err
		}
		raw, _ := json.Marshal(spec)
		if err := tx.Create(ctx, &resource.Object{Kind: authorityKind, Metadata: resource.Metadata{Name: authorityName}, Spec: raw}); err != nil {
			return err
		}
		how := "created (ECDSA P-256)"
		if imp != nil {
			how = "imported intermediate CA " + imp.certs[0].Subject.String()
		}
		b, _ := pem.Decode([]byte(spec.Certificate))
		return tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "system", Action: "create", Kind: authorityKind, Name: authorityName,
			Summary: fmt.Sprintf("certificate authority %s, fingerprint %s; token signing key created (ed25519)", how, Fingerprint(b.Bytes))})
	})
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	return decodeAuthority(&spec, sl)
}

func newAuthoritySpec(sl *sealer, imp *importedCA, now time.Time) (authoritySpec, error) {
	spec := authoritySpec{KEKID: sl.id}
	var key crypto.Signer
	var chain []byte
	if imp != nil {
		key = imp.key
		for _, c := range imp.certs {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		spec.Imported = true
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return spec, err
		}
		var id [4]byte
		_, _ = rand.Read(id[:])
		tmpl := &x509.Certificate{
			SerialNumber:          randomSerial(),
			Subject:               pkix.Name{CommonName: "Kiln CA " + hex.EncodeToString(id[:]), Organization: []string{"Kiln"}},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.AddDate(10, 0, 0),
			IsCA:                  true,
			BasicConstraintsValid: true,
			MaxPathLenZero:        true, // it signs machine and server certificates, no sub-CAs
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		if err != nil {
			return spec, fmt.Errorf("create CA certificate: %w", err)
		}
		key, chain = k, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	spec.Certificate = string(chain)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return spec, err
	}
	if spec.Key, err = sl.seal("ca-key", kder); err != nil {
		return spec, err
	}
	_, tk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return spec, err
	}
	tder, _ := x509.MarshalPKCS8PrivateKey(tk)
	if spec.TokenKey, err = sl.seal("token-key", tder); err != nil {
		return spec, err
	}
	return spec, nil
}

// resealStored re-seals the stored CA and token keys from one KEK to another and
// writes the object back, with an audit entry, in the caller's transaction.
func resealStored(ctx context.Context, tx store.Tx, obj *resource.Object, spec *authoritySpec, from, to *sealer, actor string, now time.Time) error {
	if spec.KEKID != from.id {
		return fmt.Errorf("certificate authority: sealed under key-encryption key %s, not %s", spec.KEKID, from.id)
	}
	next := *spec
	for _, f := range []struct {
		purpose string
		val     *string
	}{{"ca-key", &next.Key}, {"token-key", &next.TokenKey}} {
		plain, err := from.open(f.purpose, *f.val)
		if err != nil {
			return fmt.Errorf("certificate authority: %w", err)
		}
		if *f.val, err = to.seal(f.purpose, plain); err != nil {
			return err
		}
	}
	next.KEKID = to.id
	raw, _ := json.Marshal(next)
	upd := obj.Clone()
	upd.Spec = raw
	if err := tx.Update(ctx, upd); err != nil {
		return err
	}
	*spec = next
	return tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: actor, Action: "reseal", Kind: authorityKind, Name: authorityName,
		Summary: fmt.Sprintf("CA and token signing keys re-sealed from key-encryption key %s to %s", from.id, to.id)})
}

// ResealHook re-seals the CA and token signing keys from oldKEK to newKEK inside a
// key rotation's transaction (the shape of secrets.RotationHook). Keys already
// sealed under newKEK are left alone.
func (s *Server) ResealHook(ctx context.Context, tx store.Tx, oldKEK, newKEK []byte) (func(), error) {
	from, err := newSealer(oldKEK)
	if err != nil {
		return nil, err
	}
	to, err := newSealer(newKEK)
	if err != nil {
		return nil, err
	}
	obj, err := tx.Get(ctx, authorityKind, authorityName)
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	var spec authoritySpec
	if err := json.Unmarshal(obj.Spec, &spec); err != nil {
		return nil, fmt.Errorf("stored CA: %w", err)
	}
	if err := resealBoot(ctx, tx, from, to, s.now()); err != nil {
		return nil, err
	}
	if spec.KEKID == to.id {
		return nil, nil
	}
	return nil, resealStored(ctx, tx, obj, &spec, from, to, "system", s.now())
}

func decodeAuthority(spec *authoritySpec, sl *sealer) (*authority, error) {
	if spec.KEKID != sl.id {
		return nil, fmt.Errorf("certificate authority: its keys are sealed under key-encryption key %s, this server was given %s (give every replica the same KEK file or KILN_KEK)", spec.KEKID, sl.id)
	}
	a := &authority{imported: spec.Imported, pool: x509.NewCertPool()}
	rest := []byte(spec.Certificate)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("stored CA certificate: %w", err)
		}
		a.chain = append(a.chain, c)
	}
	if len(a.chain) == 0 {
		return nil, errors.New("stored CA certificate: none")
	}
	a.cert = a.chain[0]
	a.chainPEM = []byte(spec.Certificate)
	a.fingerprint = Fingerprint(a.cert.Raw)
	// Kiln's CA is the trust anchor for machine certificates even when it is an
	// intermediate: a machine certificate is only valid if this CA issued it.
	a.pool.AddCert(a.cert)
	kder, err := sl.open("ca-key", spec.Key)
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	if a.key, err = parsePrivateKey(kder); err != nil {
		return nil, fmt.Errorf("certificate authority key: %w", err)
	}
	if !publicKeysEqual(a.key.Public(), a.cert.PublicKey) {
		return nil, errors.New("certificate authority: the stored key does not match the stored certificate")
	}
	tder, err := sl.open("token-key", spec.TokenKey)
	if err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	tk, err := x509.ParsePKCS8PrivateKey(tder)
	if err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	var ok bool
	if a.tokenKey, ok = tk.(ed25519.PrivateKey); !ok {
		return nil, fmt.Errorf("token signing key: %T, want ed25519", tk)
	}
	a.tokenPub = a.tokenKey.Public().(ed25519.PublicKey)
	a.fast = newClientSigner(a)
	return a, nil
}

// randomSerial is a positive 127-bit serial number (RFC 5280 4.1.2.2: at most 20 octets,
// unpredictable per CA/B Forum practice).
func randomSerial() *big.Int {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[0] &= 0x7f
	b[0] |= 0x01 // never zero, never a short encoding
	return new(big.Int).SetBytes(b[:])
}

// clientTemplate is a machine certificate: CN and one DNS SAN, both the machine's name,
// client authentication only (so a machine certificate can never pose as the server).
func (a *authority) clientTemplate(name string, pub crypto.PublicKey, notBefore, notAfter time.Time) *x509.Certificate {
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	ku := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	return &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
}

func (a *authority) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// issued is a signed machine certificate.
type issued struct {
	name        string
	der         []byte
	serial      string // hex
	fingerprint string
	notBefore   time.Time
	notAfter    time.Time
	keyHash     string // SHA-256 of the certified SubjectPublicKeyInfo, hex
}

// issueClient signs a machine certificate for pub, valid from five minutes before now
// (clock skew) for ttl.
func (a *authority) issueClient(name string, pub crypto.PublicKey, now time.Time, ttl time.Duration) (*issued, error) {
	tmpl := a.clientTemplate(name, pub, now.Add(-5*time.Minute), now.Add(ttl))
	var der []byte
	ok := false
	var err error
	if a.fast != nil {
		der, ok, err = a.fast.issue(tmpl, pub)
	}
	if err == nil && !ok {
		der, err = x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	}
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", name, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", name, err)
	}
	kh := sha256.Sum256(spki)
	return &issued{name: name, der: der, serial: hex.EncodeToString(tmpl.SerialNumber.Bytes()), fingerprint: Fingerprint(der),
		notBefore: tmpl.NotBefore.UTC(), notAfter: tmpl.NotAfter.UTC(), keyHash: hex.EncodeToString(kh[:])}, nil
}

// verifyClient checks that a presented client certificate was issued by this CA for
// client authentication and is valid at now.
func (a *authority) verifyClient(c *x509.Certificate, now time.Time) error {
	_, err := c.Verify(x509.VerifyOptions{Roots: a.pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// crl signs a certificate revocation list.
func (a *authority) crl(entries []x509.RevocationListEntry, now time.Time, next time.Duration) ([]byte, error) {
	if a.cert.KeyUsage != 0 && a.cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, errors.New("the CA certificate has no cRLSign key usage: it cannot sign a CRL")
	}
	tmpl := &x509.RevocationList{
		RevokedCertificateEntries: entries,
		// Time-based numbers grow monotonically across restarts and replicas.
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now,
		NextUpdate: now.Add(next),
	}
	return x509.CreateRevocationList(rand.Reader, tmpl, a.cert, a.key)
}

// ---- the server's own certificate -------------------------------------------

// DefaultServerSANs lists the names a server certificate carries when none are
// configured: the host name, localhost, the loopback addresses and every address of
// the host's interfaces (agents often reach Kiln by IP on a provisioning LAN).
func DefaultServerSANs() []string {
	sans := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		sans = append(sans, h)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsGlobalUnicast() {
				sans = append(sans, ipn.IP.String())
			}
		}
	}
	return sans
}

// serverCerts holds the server's certificates and reissues them from the CA when two
// thirds of their lifetime have passed. Their keys live in memory only: each replica
// has its own, and agents trust the CA, not the key.
type serverCerts struct {
	ca       *authority
	dns      []string
	ips      []net.IP
	ttl      time.Duration
	withRSA  bool
	now      func() time.Time
	mu       sync.Mutex
	keys     []crypto.Signer
	current  []*tls.Certificate
	renewsAt time.Time
}

func newServerCerts(ca *authority, sans []string, ttl time.Duration, withRSA bool, now func() time.Time) (*serverCerts, error) {
	sc := &serverCerts{ca: ca, ttl: ttl, withRSA: withRSA, now: now}
	for _, s := range sans {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if ip := net.ParseIP(strings.Trim(s, "[]")); ip != nil {
			sc.ips = append(sc.ips, ip)
			continue
		}
		if !validDNSName(s) {
			return nil, fmt.Errorf("server SAN %q: not a DNS name or an IP address", s)
		}
		sc.dns = append(sc.dns, s)
	}
	if len(sc.dns)+len(sc.ips) == 0 {
		return nil, errors.New("server SANs: none")
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sc.keys = append(sc.keys, k)
	if withRSA {
		// For TLS clients without ECDSA (older iPXE builds).
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		sc.keys = append(sc.keys, rk)
	}
	if err := sc.issue(); err != nil {
		return nil, err
	}
	return sc, nil
}

func validDNSName(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// issue signs new certificates for the server's keys; the caller holds mu or owns sc.
func (sc *serverCerts) issue() error {
	now := sc.now()
	var out []*tls.Certificate
	for _, k := range sc.keys {
		cn := "kiln"
		if len(sc.dns) > 0 {
			cn = sc.dns[0]
		}
		ku := x509.KeyUsageDigitalSignature
		if _, ok := k.(*rsa.PrivateKey); ok {
			ku |= x509.KeyUsageKeyEncipherment
		}
		notAfter := now.Add(sc.ttl)
		if notAfter.After(sc.ca.cert.NotAfter) {
			notAfter = sc.ca.cert.NotAfter
		}
		tmpl := &x509.Certificate{
			SerialNumber:          randomSerial(),
			Subject:               pkix.Name{CommonName: cn, Organization: []string{"Kiln"}},
			DNSNames:              sc.dns,
			IPAddresses:           sc.ips,
			NotBefore:             now.Add(-5 * time.Minute),
			NotAfter:              notAfter,
			KeyUsage:              ku,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
		}
		c, err := sc.ca.sign(tmpl, k.Public())
		if err != nil {
			return fmt.Errorf("server certificate: %w", err)
		}
		// The chain carries the CA so that an agent can pin it by fingerprint from the
		// handshake alone.
		tc := &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k, Leaf: c}
		for _, p := range sc.ca.chain {
			tc.Certificate = append(tc.Certificate, p.Raw)
		}
		out = append(out, tc)
	}
	sc.current = out
	life := out[0].Leaf.NotAfter.Sub(now)
	sc.renewsAt = now.Add(life * 2 / 3)
	return nil
}

// get returns the certificate for a handshake, reissuing the set when it is due.
func (sc *serverCerts) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	sc.mu.Lock()
	if !sc.now().Before(sc.renewsAt) {
		if err := sc.issue(); err != nil {
			sc.mu.Unlock()
			return nil, err
		}
	}
	certs := sc.current
	sc.mu.Unlock()
	for _, c := range certs {
		if hello == nil || hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	return certs[0], nil
}
