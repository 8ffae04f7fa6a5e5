package server

import (
	"cmp"
	"context"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

// Retention defaults, sized for a 10,000-machine fleet: a machine's netboot writes
// a few dozen events and a busy one a few hundred a day, so 1,000 per machine keeps
// several reprovisions of history while 10,000 machines hold at most 10 million
// rows; 30 days is what an operator looks back over when a machine misbehaves.
const (
	DefaultEventRetention      = 30 * 24 * time.Hour
	DefaultEventRetentionCount = 1000
	DefaultAuditRetention      = 0 // off: the audit log is the compliance record
	retentionEvery             = time.Hour
	retentionAuditActor        = "system"
)

// retain removes events and (when configured) audit entries that aged out. The
// audit chain stays verifiable: the store appends a retention checkpoint that
// carries the last removed entry's hash forward.
func (s *Server) retain(ctx context.Context, now time.Time) {
	ret, ok := s.store.(store.Retainer)
	if !ok {
		return
	}
	if s.cfg.EventRetention > 0 || s.cfg.EventRetentionCount > 0 {
		before := time.Time{}
		if s.cfg.EventRetention > 0 {
			before = now.Add(-s.cfg.EventRetention)
		}
		n, err := ret.PruneEvents(ctx, before, s.cfg.EventRetentionCount)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("event retention", "err", err)
		} else if n > 0 {
			s.log.Info("event retention: removed events", "count", n, "older_than", before, "per_machine", s.cfg.EventRetentionCount)
		}
	}
	keep := cmp.Or(s.cfg.ChangeRetentionCount, DefaultChangeRetentionCount)
	if n, err := ret.PruneChanges(ctx, keep); err != nil && ctx.Err() == nil {
		s.log.Warn("change log retention", "err", err)
	} else if n > 0 {
		s.log.Info("change log retention: removed object writes", "count", n, "kept", keep)
	}
	if s.cfg.AuditRetention > 0 {
		before := now.Add(-s.cfg.AuditRetention)
		n, err := ret.PruneAudit(ctx, before, retentionAuditActor)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("audit retention", "err", err)
		} else if n > 0 {
			s.log.Info("audit retention: removed entries behind a retention checkpoint", "count", n, "older_than", before)
		}
	}
}
