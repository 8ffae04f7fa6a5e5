package enroll

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// Importing an operator's intermediate CA (Config.ImportCACert/ImportCAKey).

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
