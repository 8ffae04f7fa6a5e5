package enroll

import (
	"context"
	"errors"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// DefaultApprovalTTL is how long an enrollment request waits for a decision.
const DefaultApprovalTTL = 24 * time.Hour

// maxStoredFactsBytes bounds the facts kept with a pending request.
const maxStoredFactsBytes = 16 << 10

// ApproveEnrollment approves a pending request.
func (s *Server) ApproveEnrollment(ctx context.Context, actor, id, machine string) (*resource.Object, error) {
	return nil, errors.New("not implemented")
}

// DenyEnrollment denies a pending request.
func (s *Server) DenyEnrollment(ctx context.Context, actor, id, reason string) (*resource.Object, error) {
	return nil, errors.New("not implemented")
}
