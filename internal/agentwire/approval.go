package agentwire

import (
	"net/url"
	"time"
)

// Enrollment by approval. Where Kiln cannot bind a machine to an address it handed
// out, an enrollment may wait for an operator: Kiln answers EnrollPath with 202 and
// an EnrollPending, and the agent polls EnrollRequestPath(id) with an
// EnrollPollRequest until the request is approved (200 and an EnrollResponse, as for
// an enrollment answered at once), denied (403) or expired (410).

// EnrollRequestPattern is the poll route of a pending enrollment, as a net/http
// pattern. It is a POST: each poll carries a proof (see EnrollPollRequest).
const EnrollRequestPattern = "/enroll/requests/{id}"

// EnrollRequestPath is EnrollRequestPattern for one request.
func EnrollRequestPath(id string) string { return "/enroll/requests/" + url.PathEscape(id) }

// Enrollment request states.
const (
	EnrollmentPending  = "pending"
	EnrollmentApproved = "approved"
	EnrollmentDenied   = "denied"
	EnrollmentExpired  = "expired"
)

// EnrollPending is the body of a 202 answer: the enrollment waits for an operator.
type EnrollPending struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// PollPath is where to poll (EnrollRequestPath(ID)).
	PollPath string `json:"pollPath"`
	// RetryAfterSeconds is how long to wait before the next poll, at least.
	RetryAfterSeconds int       `json:"retryAfterSeconds"`
	ExpiresAt         time.Time `json:"expiresAt"`
	// TPMChallenge is set in state EnrollmentTPMChallenge (see tpm.go).
	TPMChallenge *TPMChallenge `json:"tpmChallenge,omitempty"`
}

// EnrollPollRequest is the body of a poll. CSR is a new CSR for the key of the
// pending request's CSR, carrying the channel binding of the connection the poll is
// sent on: it proves that the poller holds the requester's key, on this connection,
// so that neither another host nor a replayed poll can collect the certificate.
type EnrollPollRequest struct {
	CSR string `json:"csr"`
}
