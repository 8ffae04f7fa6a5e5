package enroll

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// The boot CA is a second, RSA root that signs only the RSA server certificate
// firmware and iPXE see on the HTTPS port. Why a second root and not the ECDSA CA:
// Debian 13's iPXE (1.21.1+git20250501) is built with RSA signature algorithms only
// (sha{1,224,256,384,512}WithRSAEncryption, no ECDSA), so it cannot verify a chain
// that ends at an ECDSA CA, whatever the leaf's key; and the certificate it trusts
// comes from the firmware's TlsCaCertificate variable (interface/efi/efi_cacert.c),
// which an operator fills once per machine or BMC and should not have to change.
// Replacing the ECDSA CA by an RSA one would double every enrollment's signing cost
// (BENCHMARKS.md) and break every agent's pin. The boot CA signs server certificates
// only (its name constraint-free key usage is CertSign and CRLSign, and the server
// certificates it signs have ExtKeyUsageServerAuth only), so trusting it in firmware
// lets nothing pose as a machine.
//
// Its key is sealed under the KEK in the store like the CA's (purpose "boot-ca-key"),
// so replicas share it and a KEK rotation re-seals it.
const bootAuthorityName = "boot"

// bootCAKeyBits is RSA-3072: a ten-year root (NIST SP 800-57 puts 2048 at 112 bits,
// acceptable to 2030); iPXE verifies one signature with it per handshake.
const bootCAKeyBits = 3072

// bootAuthoritySpec is the stored form of the boot CA.
type bootAuthoritySpec struct {
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
	KEKID       string `json:"kekId"`
}

const bootCAKeyPurpose = "boot-ca-key"

// openBootAuthority loads the boot CA from the store, creating it on first use in one
// write transaction (two replicas starting together end up with one).
func openBootAuthority(ctx context.Context, st store.Store, sl *sealer, others []*sealer, now time.Time) (*authority, error) {
	var spec bootAuthoritySpec
	err := st.Update(ctx, func(tx store.Tx) error {
		obj, err := tx.Get(ctx, authorityKind, bootAuthorityName)
		if err == nil {
			if err := json.Unmarshal(obj.Spec, &spec); err != nil {
				return fmt.Errorf("stored boot CA: %w", err)
			}
			for _, o := range others {
				if spec.KEKID == o.id && o.id != sl.id {
					return resealBootStored(ctx, tx, obj, &spec, o, sl, now)
				}
			}
			return nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if spec, err = newBootAuthoritySpec(sl, now); err != nil {
			return err
		}
		raw, _ := json.Marshal(spec)
		if err := tx.Create(ctx, &resource.Object{Kind: authorityKind, Metadata: resource.Metadata{Name: bootAuthorityName}, Spec: raw}); err != nil {
			return err
		}
		b, _ := pem.Decode([]byte(spec.Certificate))
		return tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "system", Action: "create", Kind: authorityKind, Name: bootAuthorityName,
			Summary: fmt.Sprintf("boot certificate authority created (RSA %d, for firmware and iPXE HTTPS), fingerprint %s", bootCAKeyBits, Fingerprint(b.Bytes))})
	})
	if err != nil {
		return nil, fmt.Errorf("boot certificate authority: %w", err)
	}
	return decodeBootAuthority(&spec, sl)
}

func newBootAuthoritySpec(sl *sealer, now time.Time) (bootAuthoritySpec, error) {
	spec := bootAuthoritySpec{KEKID: sl.id}
	k, err := rsa.GenerateKey(rand.Reader, bootCAKeyBits)
	if err != nil {
		return spec, fmt.Errorf("generate boot CA key: %w", err)
	}
	// Only server certificates below it: a firmware that trusts this root for HTTPS
	// boot must not accept a client or code-signing certificate from it.
	der, err := selfSignedRoot(k, "Kiln boot CA", now, 0, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	if err != nil {
		return spec, fmt.Errorf("create boot CA certificate: %w", err)
	}
	spec.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return spec, err
	}
	spec.Key, err = sl.seal(bootCAKeyPurpose, kder)
	return spec, err
}

func decodeBootAuthority(spec *bootAuthoritySpec, sl *sealer) (*authority, error) {
	if spec.KEKID != sl.id {
		return nil, fmt.Errorf("boot certificate authority: its key is sealed under key-encryption key %s, this server was given %s", spec.KEKID, sl.id)
	}
	b, _ := pem.Decode([]byte(spec.Certificate))
	if b == nil {
		return nil, errors.New("stored boot CA certificate: no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("stored boot CA certificate: %w", err)
	}
	kder, err := sl.open(bootCAKeyPurpose, spec.Key)
	if err != nil {
		return nil, fmt.Errorf("boot certificate authority: %w", err)
	}
	key, err := parsePrivateKey(kder)
	if err != nil {
		return nil, fmt.Errorf("boot certificate authority key: %w", err)
	}
	if !publicKeysEqual(key.Public(), c.PublicKey) {
		return nil, errors.New("boot certificate authority: the stored key does not match the stored certificate")
	}
	a := &authority{cert: c, chain: []*x509.Certificate{c}, chainPEM: []byte(spec.Certificate), key: key,
		fingerprint: Fingerprint(c.Raw), pool: x509.NewCertPool()}
	a.pool.AddCert(c)
	return a, nil
}

// resealBootStored re-seals the boot CA's key from one KEK to another, with an audit
// entry, in the caller's transaction.
func resealBootStored(ctx context.Context, tx store.Tx, obj *resource.Object, spec *bootAuthoritySpec, from, to *sealer, now time.Time) error {
	plain, err := from.open(bootCAKeyPurpose, spec.Key)
	if err != nil {
		return fmt.Errorf("boot certificate authority: %w", err)
	}
	next := *spec
	if next.Key, err = to.seal(bootCAKeyPurpose, plain); err != nil {
		return err
	}
	next.KEKID = to.id
	raw, _ := json.Marshal(next)
	o := *obj
	o.Spec = raw
	if err := tx.Update(ctx, &o); err != nil {
		return fmt.Errorf("boot certificate authority: re-seal: %w", err)
	}
	*spec = next
	return tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "system", Action: "reseal", Kind: authorityKind, Name: bootAuthorityName,
		Summary: fmt.Sprintf("boot CA key re-sealed from key-encryption key %s to %s", from.id, to.id)})
}

// resealBoot is ResealHook's part for the boot CA: absent (never created) is fine.
func resealBoot(ctx context.Context, tx store.Tx, from, to *sealer, now time.Time) error {
	obj, err := tx.Get(ctx, authorityKind, bootAuthorityName)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("boot certificate authority: %w", err)
	}
	var spec bootAuthoritySpec
	if err := json.Unmarshal(obj.Spec, &spec); err != nil {
		return fmt.Errorf("stored boot CA: %w", err)
	}
	if spec.KEKID == to.id {
		return nil
	}
	return resealBootStored(ctx, tx, obj, &spec, from, to, now)
}

// bootRSAKeyExchangeSuites are TLS 1.2 suites with RSA key exchange. Go has left them
// out of its defaults since 1.22 (no forward secrecy); they are offered only to
// boot clients, because OVMF 2022.11's HTTPS boot client (EDK II TlsLib on
// OpenSSL) sends a ClientHello with no ECDHE suite at all: without these, its
// handshake fails (verified, NETBOOT-LAB.md). What such a client fetches is public
// (iPXE binaries, signed images), so the missing forward secrecy costs nothing;
// bootPublicOnly keeps anything else off those connections.
var bootRSAKeyExchangeSuites = []uint16{
	tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA256,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// IsRSAKeyExchange reports whether a negotiated TLS 1.2 suite has no forward secrecy.
func IsRSAKeyExchange(suite uint16) bool { return slices.Contains(bootRSAKeyExchangeSuites, suite) }

// isBootClient reports whether a ClientHello comes from a client that cannot use
// Kiln's ECDSA chain or its ECDHE-only suites: iPXE (it lists only RSA signature
// algorithms) or UEFI firmware's HTTPS boot (it offers no ECDHE suite). Such a client
// gets the boot CA's RSA chain. A client that asks for it without being one gets
// nothing it could not get anyway: both chains are Kiln's, and the handler decides
// what it may fetch.
func isBootClient(hello *tls.ClientHelloInfo) bool {
	ecdsaSig := slices.ContainsFunc(hello.SignatureSchemes, func(s tls.SignatureScheme) bool {
		return s == tls.ECDSAWithP256AndSHA256 || s == tls.ECDSAWithP384AndSHA384 || s == tls.ECDSAWithP521AndSHA512 || s == tls.Ed25519
	})
	// TLS 1.3 suites (0x1301-0x1303) always use (EC)DHE.
	ecdhe := slices.ContainsFunc(hello.CipherSuites, func(c uint16) bool {
		return strings.HasPrefix(tls.CipherSuiteName(c), "TLS_ECDHE_") || c>>8 == 0x13
	})
	return !ecdsaSig || !ecdhe
}

// bootTLSConfig is the configuration a boot client's handshake continues with: the
// RSA chain up to the boot CA, and RSA key exchange allowed after every ECDHE suite
// (Go picks ECDHE whenever the client offers it: iPXE does, OVMF does not).
func (s *Server) bootTLSConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.GetConfigForClient = nil
	c.GetCertificate = s.bootCerts.get
	var suites []uint16
	for _, cs := range tls.CipherSuites() {
		suites = append(suites, cs.ID)
	}
	c.CipherSuites = append(suites, bootRSAKeyExchangeSuites...)
	// Firmware HTTP clients speak HTTP/1.1 only.
	c.NextProtos = []string{"http/1.1"}
	return c
}

// BootCA describes the boot CA, nil when the server has none (boot HTTPS off).
func (s *Server) BootCA() *BootCAInfo {
	if s.bootCA == nil {
		return nil
	}
	c := s.bootCA.cert
	return &BootCAInfo{Fingerprint: s.bootCA.fingerprint, Subject: c.Subject.String(), NotBefore: c.NotBefore.UTC(),
		NotAfter: c.NotAfter.UTC(), Certificate: string(s.bootCA.chainPEM)}
}

// BootCAInfo is the boot CA as `kiln ca show --boot` prints it.
type BootCAInfo struct {
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
	Certificate string    `json:"certificate"`
}

// newBootServerCerts issues the RSA-2048 server certificate the boot CA signs, with
// the server's SANs, renewed like the main one.
func newBootServerCerts(ca *authority, sc *serverCerts) (*serverCerts, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	b := &serverCerts{ca: ca, dns: sc.dns, ips: sc.ips, ttl: sc.ttl, now: sc.now, keys: []crypto.Signer{k}}
	if err := b.issue(); err != nil {
		return nil, fmt.Errorf("boot %w", err)
	}
	return b, nil
}
