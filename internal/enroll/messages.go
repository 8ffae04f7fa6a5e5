package enroll

import (
	"github.com/kilnhq/kiln/internal/agentwire"
)

// The bodies of POST /enroll.

// EnrollRequest is the body of POST /enroll; agentwire defines it for both sides.
type EnrollRequest = agentwire.EnrollRequest

// EnrollResponse is the answer to POST /enroll: agentwire's (the JSON the agent
// reads), with what the server keeps about the issue for binding the connection.
type EnrollResponse struct {
	agentwire.EnrollResponse

	issued *issued
	// channelBound: the CSR carried the request connection's channel binding.
	channelBound bool
	// pending, if set: nothing was issued, the enrollment waits for an operator
	// (approval.go) and the answer is this, with 202.
	pending *agentwire.EnrollPending
}
