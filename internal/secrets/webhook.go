package secrets

import (
	"context"
	"errors"
	"fmt"

	"github.com/kilnhq/kiln/internal/store"
)

// WebhookKey decrypts the newest version of secret name, the HMAC key that signs
// webhook's deliveries. The key never leaves the server (only signatures do), so
// the Secret's machine release rules do not apply; each release is audited.
func (s *Service) WebhookKey(ctx context.Context, webhook, name string) ([]byte, error) {
	var value []byte
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(ctx, "Secret", name); err != nil {
			return err
		}
		v, err := tx.GetSecretVersion(ctx, name, 0)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("secret %q has no value yet (kiln secret set): %w", name, err)
		}
		if err != nil {
			return err
		}
		if value, err = s.Keys.open(v); err != nil {
			return err
		}
		return s.audit(ctx, tx, "webhook", "release", "Secret", name,
			fmt.Sprintf("released secret %s v%d to sign the deliveries of webhook %s", name, v.Version, webhook))
	})
	if err != nil {
		return nil, fmt.Errorf("signing key of webhook %q (secret %q): %w", webhook, name, err)
	}
	return value, nil
}
