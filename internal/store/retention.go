package store

import (
	"context"
	"time"
)

// Retainer is implemented by stores that remove what has aged out, so that what
// machines and anonymous hosts cause to be written cannot grow without bound.
type Retainer interface {
	// PruneEvents removes events older than before and, per machine, all but the
	// newest keepPerMachine (<= 0: no count limit). It returns how many it removed.
	PruneEvents(ctx context.Context, before time.Time, keepPerMachine int) (int64, error)
	// PruneAudit removes the audit entries older than before, except the newest
	// entry, without breaking the chain: in the same transaction it appends a
	// retention checkpoint (audit.RetentionAction) that records the last removed
	// entry's sequence and hash, which VerifyAudit then starts from. It returns how
	// many entries it removed (0: nothing was old enough; no checkpoint then).
	PruneAudit(ctx context.Context, before time.Time, actor string) (int64, error)
	// PruneChanges removes all but the newest keep entries of the change log (the
	// object watches' history); it returns how many it removed.
	PruneChanges(ctx context.Context, keep int64) (int64, error)
}
