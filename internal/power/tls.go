package power

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// BMCs almost always present a self-signed certificate made at the factory, for a
// name that is not the address Kiln reaches them by. So a Machine may pin the
// certificate instead (spec.bmc.caFingerprint, the SHA-256 of its DER encoding):
// the connection is then accepted exactly when the BMC presents that certificate,
// or a chain whose leaf is signed by it (a pinned site CA). Without a pin the
// certificate must verify against the system roots or Options.RootCAs, host name
// included. There is no "insecure" mode.

// bmcTLSConfig returns the client TLS configuration for a BMC.
func bmcTLSConfig(fingerprint string, roots *x509.CertPool) (*tls.Config, error) {
	if fingerprint == "" {
		return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
	}
	want, err := parseFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Chain and host name verification are replaced by the pin check below,
		// which runs on every handshake, resumed ones included.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs.PeerCertificates, want)
		},
	}, nil
}

// parseFingerprint accepts 64 hex digits, optionally separated by colons.
func parseFingerprint(s string) ([]byte, error) {
	h := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%w: spec.bmc.caFingerprint: not a SHA-256 fingerprint (64 hex digits)", ErrConfig)
	}
	return b, nil
}

// Fingerprint returns the SHA-256 fingerprint of a certificate in the form
// spec.bmc.caFingerprint takes (lower-case hex).
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// pinError: the BMC presented a certificate other than the pinned one, or a leaf
// the pinned CA did not issue.
type pinError struct {
	presented string // the leaf's fingerprint
	err       error  // why a pinned CA in the chain did not verify the leaf
}

func (e *pinError) Error() string {
	if e.err != nil {
		return "the pinned CA does not sign the BMC certificate " + e.presented + ": " + e.err.Error()
	}
	return "certificate fingerprint " + e.presented + " does not match spec.bmc.caFingerprint"
}

func verifyPinned(certs []*x509.Certificate, want []byte) error {
	if len(certs) == 0 {
		return errors.New("BMC presented no certificate")
	}
	leaf := certs[0]
	sum := sha256.Sum256(leaf.Raw)
	if subtle.ConstantTimeCompare(sum[:], want) == 1 {
		return nil
	}
	for i, c := range certs[1:] {
		s := sha256.Sum256(c.Raw)
		if subtle.ConstantTimeCompare(s[:], want) != 1 {
			continue
		}
		// The pinned certificate is a CA in the presented chain: the leaf must
		// really be issued under it (CA certificates are public, anyone can
		// send one along).
		roots := x509.NewCertPool()
		roots.AddCert(c)
		inter := x509.NewCertPool()
		for _, ic := range certs[1 : i+1] {
			inter.AddCert(ic)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return &pinError{presented: hex.EncodeToString(sum[:]), err: err}
		}
		return nil
	}
	return &pinError{presented: hex.EncodeToString(sum[:])}
}

func isTLSError(err error) bool {
	var (
		pe   *pinError
		cve  *tls.CertificateVerificationError
		ua   x509.UnknownAuthorityError
		he   x509.HostnameError
		ci   x509.CertificateInvalidError
		rhe  tls.RecordHeaderError
		alrt tls.AlertError
	)
	return errors.As(err, &pe) || errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) ||
		errors.As(err, &ci) || errors.As(err, &rhe) || errors.As(err, &alrt)
}
