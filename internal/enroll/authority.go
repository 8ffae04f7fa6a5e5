package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
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
		// It signs machine and server certificates, no sub-CAs.
		der, err := selfSignedRoot(k, "Kiln CA", now, x509.KeyUsageDigitalSignature, nil)
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

// selfSignedRoot makes a ten-year root certificate for key, named prefix plus a
// random suffix (so that two Kiln installations' roots are told apart), that may
// sign end certificates and CRLs but no intermediate CA: extraUsage is added to
// CertSign|CRLSign, extUsage limits what it may certify (nil: anything).
func selfSignedRoot(key crypto.Signer, prefix string, now time.Time, extraUsage x509.KeyUsage, extUsage []x509.ExtKeyUsage) ([]byte, error) {
	var id [4]byte
	_, _ = rand.Read(id[:])
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: prefix + " " + hex.EncodeToString(id[:]), Organization: []string{"Kiln"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | extraUsage,
		ExtKeyUsage:           extUsage,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
}
