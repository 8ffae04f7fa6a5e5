package secrets

import (
	"context"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

// ReleaseToBMC decrypts the newest version of secret name for the power subsystem to
// log in to machine's BMC. The Secret's release rules must allow the machine (the BMC
// is as much a destination as the machine itself: whoever controls its address
// receives the value). The release, or the refusal, is audited.
func (s *Service) ReleaseToBMC(ctx context.Context, machine, name string) ([]byte, error) {
	var value []byte
	var denied error
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		m, err := tx.Get(ctx, "Machine", machine)
		if err != nil {
			return fmt.Errorf("machine %q: %w", machine, err)
		}
		// time.Time{}: the BMC's credentials log Kiln in to the BMC; what the
		// machine booted (its attestation) does not apply.
		v, err := releasable(ctx, tx, name, m, time.Time{})
		if err != nil {
			denied = err
			return s.audit(ctx, tx, "power", "deny", "Secret", name,
				fmt.Sprintf("denied secret %s to the BMC of machine %s: %s", name, machine, denyReason(err)))
		}
		if value, err = s.Keys.open(v); err != nil {
			return err
		}
		return s.audit(ctx, tx, "power", "release", "Secret", name,
			fmt.Sprintf("released secret %s v%d to the BMC of machine %s", name, v.Version, machine))
	})
	if err == nil && denied != nil {
		err = denied
	}
	if err != nil {
		return nil, fmt.Errorf("release secret %q to the BMC of machine %q: %w", name, machine, err)
	}
	return value, nil
}
