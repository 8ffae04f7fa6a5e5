package enroll

import (
	"time"
)

// The bodies of POST /enroll.

// EnrollRequest is the body of POST /enroll.
type EnrollRequest struct {
	// Token is the join token. Empty only when registration by MAC is switched on.
	Token string `json:"token,omitempty"`
	// CSR is a PEM certificate request: the agent's public key, signed by its private
	// key, which never leaves the machine. See csr.go for what its names may say.
	CSR string `json:"csr"`
	// Facts are what the agent reports about the machine (see FactMACs for the MACs).
	Facts map[string]any `json:"facts,omitempty"`

	// channel is the channel binding of the connection the request came on (set by
	// the HTTP handler), for a CSR that carries one.
	channel []byte
}

// EnrollResponse carries the issued certificate.
type EnrollResponse struct {
	Machine       string    `json:"machine"`
	Certificate   string    `json:"certificate"` // PEM
	CAChain       string    `json:"caChain"`     // PEM: Kiln's CA, then its issuers if imported
	CAFingerprint string    `json:"caFingerprint"`
	Serial        string    `json:"serial"`
	NotAfter      time.Time `json:"notAfter"`
	// RenewAfter is when the agent should renew: at two thirds of the lifetime.
	RenewAfter time.Time `json:"renewAfter"`
	// BoundConnection: the connection the agent enrolled on now speaks for the machine
	// (see connbind.go); false: the agent must open a new connection with the
	// certificate.
	BoundConnection bool `json:"boundConnection,omitempty"`

	issued *issued
	// channelBound: the CSR carried the request connection's channel binding.
	channelBound bool
}
