package secrets

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

// A handle id is 32 random bytes in unpadded base64url: 43 characters, 256 bits that
// nobody guesses. The store keeps only the SHA-256 of the bytes, so reading the
// database does not give usable handles.
const (
	handleIDBytes = 32
	handleIDLen   = 43
)

var handleEncoding = base64.RawURLEncoding.Strict()

func newHandleID() (id, hash string, err error) {
	b, err := randomBytes(handleIDBytes)
	if err != nil {
		return "", "", err
	}
	sum := sha256.Sum256(b)
	return handleEncoding.EncodeToString(b), hex.EncodeToString(sum[:]), nil
}

// ParseHandleID checks a handle id as found in a URL and returns the hash it is
// stored under. Anything but 43 base64url characters encoding 32 bytes is ErrBadHandle.
func ParseHandleID(id string) (hash string, err error) {
	if len(id) != handleIDLen {
		return "", fmt.Errorf("%w: %d characters, want %d", ErrBadHandle, len(id), handleIDLen)
	}
	b, err := handleEncoding.DecodeString(id)
	if err != nil || len(b) != handleIDBytes {
		return "", fmt.Errorf("%w: not base64url", ErrBadHandle)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Redeemed is a handle's secret, released.
type Redeemed struct {
	Secret  string
	Version int64
	Machine string
	Value   []byte
}

// Redeem releases the secret behind a handle, once. The handle is burnt in the same
// transaction that audits the release, by a conditional update only one request (on
// any replica) can win; the value is decrypted before that commits, so a failure
// leaves the handle unused. A second use is store.ErrHandleUsed and raises an alert
// (audit entry and machine event); an expired handle is store.ErrHandleExpired;
// store.ErrNotFound for a handle Kiln does not know (or purged long after expiry).
// remote is the requester's address, for the audit.
func (s *Service) Redeem(ctx context.Context, id, remote string) (*Redeemed, error) {
	hash, err := ParseHandleID(id)
	if err != nil {
		return nil, err
	}
	var out *Redeemed
	var denied error
	var h *store.SecretHandle
	err = s.Store.Update(ctx, func(tx store.Tx) error {
		var err error
		h, err = tx.UseSecretHandle(ctx, hash, s.now())
		if err != nil {
			return err
		}
		// The rules may have changed since the handle was issued: check them again.
		m, err := tx.Get(ctx, "Machine", h.Machine)
		if err == nil {
			_, err = releasable(ctx, tx, h.Secret, m, s.now())
		}
		if err != nil {
			denied = err
			return s.audit(ctx, tx, "handle:"+remote, "deny", "Secret", h.Secret,
				fmt.Sprintf("denied secret %s v%d to machine %s via handle (requested from %s): %s; the handle is used up",
					h.Secret, h.Version, h.Machine, remote, denyReason(err)))
		}
		v, err := tx.GetSecretVersion(ctx, h.Secret, h.Version)
		if err != nil {
			return err
		}
		value, err := s.Keys.open(v)
		if err != nil {
			return err
		}
		out = &Redeemed{Secret: h.Secret, Version: h.Version, Machine: h.Machine, Value: value}
		if err := s.audit(ctx, tx, "handle:"+remote, "release", "Secret", h.Secret,
			fmt.Sprintf("released secret %s v%d to machine %s via handle (%s, requested from %s)", h.Secret, h.Version, h.Machine, h.Channel, remote)); err != nil {
			return err
		}
		return s.event(ctx, tx, h.Machine, "SecretReleased", fmt.Sprintf("secret %s v%d released via handle (%s) to %s", h.Secret, h.Version, h.Channel, remote))
	})
	switch {
	case err == nil && denied != nil:
		return nil, fmt.Errorf("redeem handle: %w", denied)
	case err == nil:
		s.log().Info("secret released via handle", "secret", out.Secret, "version", out.Version, "machine", out.Machine, "remote", remote)
		return out, nil
	case errors.Is(err, store.ErrHandleUsed):
		s.alertReuse(ctx, h, remote)
		return nil, fmt.Errorf("redeem handle: %w", store.ErrHandleUsed)
	case errors.Is(err, store.ErrHandleExpired):
		s.recordExpired(ctx, h, remote)
		return nil, fmt.Errorf("redeem handle: %w", store.ErrHandleExpired)
	}
	return nil, fmt.Errorf("redeem handle: %w", err)
}

// RefusePlainHTTP burns a handle that was presented over plain HTTP, without
// releasing its secret: its id crossed the network in clear, so anyone on the path
// could redeem it over HTTPS before the machine does. The refusal is an alert (audit
// entry and machine event). It returns ErrHandleOverHTTP, or what Redeem would for a
// handle already used (with its alert), expired or unknown.
func (s *Service) RefusePlainHTTP(ctx context.Context, id, remote string) error {
	hash, err := ParseHandleID(id)
	if err != nil {
		return err
	}
	var h *store.SecretHandle
	err = s.Store.Update(ctx, func(tx store.Tx) error {
		var err error
		if h, err = tx.UseSecretHandle(ctx, hash, s.now()); err != nil {
			return err
		}
		if err := s.audit(ctx, tx, "handle:"+remote, "alert", "Secret", h.Secret,
			fmt.Sprintf("ALERT: handle for secret %s v%d of machine %s (%s) presented over plain HTTP from %s: refused, and burnt (it crossed the network in clear)",
				h.Secret, h.Version, h.Machine, h.Channel, remote)); err != nil {
			return err
		}
		return s.event(ctx, tx, h.Machine, "SecretHandleOverHTTP",
			fmt.Sprintf("ALERT: handle for secret %s v%d (%s) presented over plain HTTP from %s: refused and burnt; render the config again", h.Secret, h.Version, h.Channel, remote))
	})
	switch {
	case err == nil:
		s.log().Warn("secret handle presented over plain HTTP: burnt", "secret", h.Secret, "version", h.Version, "machine", h.Machine, "remote", remote)
		return ErrHandleOverHTTP
	case errors.Is(err, store.ErrHandleUsed):
		s.alertReuse(ctx, h, remote)
		return fmt.Errorf("redeem handle: %w", store.ErrHandleUsed)
	case errors.Is(err, store.ErrHandleExpired):
		s.recordExpired(ctx, h, remote)
		return fmt.Errorf("redeem handle: %w", store.ErrHandleExpired)
	}
	return fmt.Errorf("refuse a handle over plain HTTP: %w", err)
}

func denyReason(err error) string {
	switch {
	case errors.Is(err, ErrDenied):
		return "the machine is no longer in its release rules"
	case errors.Is(err, store.ErrNotFound):
		return "the secret or the machine no longer exists"
	}
	return "the release could not be checked"
}

// alertReuse records a second use of a handle: someone else may hold it.
func (s *Service) alertReuse(ctx context.Context, h *store.SecretHandle, remote string) {
	used := "?"
	if h.UsedAt != nil {
		used = h.UsedAt.Format(time.RFC3339Nano)
	}
	s.log().Warn("secret handle used again", "secret", h.Secret, "version", h.Version, "machine", h.Machine, "remote", remote, "first_used", used)
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		if err := s.audit(ctx, tx, "handle:"+remote, "alert", "Secret", h.Secret,
			fmt.Sprintf("ALERT: single-use handle for secret %s v%d of machine %s (%s) used again from %s; first used at %s",
				h.Secret, h.Version, h.Machine, h.Channel, remote, used)); err != nil {
			return err
		}
		return s.event(ctx, tx, h.Machine, "SecretHandleReused",
			fmt.Sprintf("ALERT: handle for secret %s v%d (%s) used again from %s; first used at %s: it may have leaked", h.Secret, h.Version, h.Channel, remote, used))
	})
	if err != nil {
		s.log().Error("record a reused secret handle", "secret", h.Secret, "machine", h.Machine, "err", err)
	}
}

func (s *Service) recordExpired(ctx context.Context, h *store.SecretHandle, remote string) {
	s.log().Info("expired secret handle requested", "secret", h.Secret, "machine", h.Machine, "remote", remote)
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		if err := s.audit(ctx, tx, "handle:"+remote, "handle-expired", "Secret", h.Secret,
			fmt.Sprintf("expired handle for secret %s v%d of machine %s (%s) requested from %s; expired at %s",
				h.Secret, h.Version, h.Machine, h.Channel, remote, h.ExpiresAt.Format(time.RFC3339))); err != nil {
			return err
		}
		return s.event(ctx, tx, h.Machine, "SecretHandleExpired",
			fmt.Sprintf("handle for secret %s v%d (%s) requested from %s after it expired", h.Secret, h.Version, h.Channel, remote))
	})
	if err != nil {
		s.log().Error("record an expired secret handle", "secret", h.Secret, "machine", h.Machine, "err", err)
	}
}

// HandleStatus tells whether a handle was used, and when, without revealing anything
// (Vault's token lookup).
type HandleStatus struct {
	Secret    string     `json:"secret"`
	Version   int64      `json:"version"`
	Machine   string     `json:"machine"`
	Channel   string     `json:"channel"`
	CreatedAt time.Time  `json:"createdAt"`
	ExpiresAt time.Time  `json:"expiresAt"`
	Used      bool       `json:"used"`
	UsedAt    *time.Time `json:"usedAt,omitempty"`
	Expired   bool       `json:"expired"`
}

// Status looks a handle up without using it.
func (s *Service) Status(ctx context.Context, id string) (*HandleStatus, error) {
	hash, err := ParseHandleID(id)
	if err != nil {
		return nil, err
	}
	var h *store.SecretHandle
	if err := s.Store.View(ctx, func(tx store.Tx) error {
		h, err = tx.GetSecretHandle(ctx, hash)
		return err
	}); err != nil {
		return nil, fmt.Errorf("secret handle status: %w", err)
	}
	return &HandleStatus{Secret: h.Secret, Version: h.Version, Machine: h.Machine, Channel: h.Channel,
		CreatedAt: h.CreatedAt, ExpiresAt: h.ExpiresAt, Used: h.UsedAt != nil, UsedAt: h.UsedAt,
		Expired: h.UsedAt == nil && !s.now().Before(h.ExpiresAt)}, nil
}

// IssueHandle creates a single-use handle for a secret the machine may receive, for a
// component that hands a URL to something that cannot do mTLS (a kernel command line
// built for an authenticated machine). channel says what it is for. ttl 0 is the
// default; baseURL is used when it is https and the Service has no https URL.
func (s *Service) IssueHandle(ctx context.Context, actor, machine, secret, channel string, ttl time.Duration, baseURL string) (string, time.Time, error) {
	if ttl == 0 {
		ttl = s.handleTTL()
	}
	if ttl < 0 || ttl > s.maxHandleTTL() {
		return "", time.Time{}, invalid("handle TTL %s is not between 0 and %s", ttl, s.maxHandleTTL())
	}
	base, err := s.handleBase(baseURL)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue a handle for secret %q to machine %q: %w", secret, machine, err)
	}
	id, hash, err := newHandleID()
	if err != nil {
		return "", time.Time{}, err
	}
	exp := s.now().Add(ttl)
	err = s.Store.Update(ctx, func(tx store.Tx) error {
		m, err := tx.Get(ctx, "Machine", machine)
		if err != nil {
			return err
		}
		v, err := releasable(ctx, tx, secret, m, s.now())
		if err != nil {
			return err
		}
		if _, err := tx.PurgeSecretHandles(ctx, s.now().Add(-s.handleRetention())); err != nil {
			return err
		}
		if err := tx.CreateSecretHandle(ctx, &store.SecretHandle{IDHash: hash, Secret: secret, Version: v.Version, Machine: machine,
			Channel: channel, ExpiresAt: exp, CreatedAt: s.now()}); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "issue-handle", "Secret", secret,
			fmt.Sprintf("issued a single-use handle for secret %s v%d to machine %s (%s), expires %s", secret, v.Version, machine, channel, exp.Format(time.RFC3339)))
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue a handle for secret %q to machine %q: %w", secret, machine, err)
	}
	return base + "/secret-handles/" + id, exp, nil
}

// Fetch releases a secret to a machine over its mTLS channel (the agent asking for
// one by name). A denial is audited and returned as ErrDenied.
func (s *Service) Fetch(ctx context.Context, machine, secret string) (*Redeemed, error) {
	var out *Redeemed
	var denied error
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		m, err := tx.Get(ctx, "Machine", machine)
		if err != nil {
			return err
		}
		v, err := releasable(ctx, tx, secret, m, s.now())
		if errors.Is(err, ErrDenied) {
			denied = err
			if err := s.audit(ctx, tx, "machine:"+machine, "deny", "Secret", secret,
				fmt.Sprintf("denied secret %s to machine %s via mtls (direct request): not in its release rules", secret, machine)); err != nil {
				return err
			}
			return s.event(ctx, tx, machine, "SecretDenied", fmt.Sprintf("asked for secret %s, which is not released to this machine", secret))
		}
		if err != nil {
			return err
		}
		value, err := s.Keys.open(v)
		if err != nil {
			return err
		}
		out = &Redeemed{Secret: secret, Version: v.Version, Machine: machine, Value: value}
		if err := s.audit(ctx, tx, "machine:"+machine, "release", "Secret", secret,
			fmt.Sprintf("released secret %s v%d to machine %s via mtls (direct request)", secret, v.Version, machine)); err != nil {
			return err
		}
		return s.event(ctx, tx, machine, "SecretReleased", fmt.Sprintf("secret %s v%d released via mtls", secret, v.Version))
	})
	if err == nil && denied != nil {
		err = denied
	}
	if err != nil {
		return nil, fmt.Errorf("release secret %q to machine %q: %w", secret, machine, err)
	}
	s.log().Info("secret released via mtls", "secret", secret, "version", out.Version, "machine", machine)
	return out, nil
}

// DenyOtherMachine records that a machine asked for another machine's config or
// secret: an audit entry and an event on the machine asked about.
func (s *Service) DenyOtherMachine(ctx context.Context, asker, target, what string) {
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		if err := s.audit(ctx, tx, "machine:"+asker, "deny", "Machine", target,
			fmt.Sprintf("machine %s (client certificate) asked for %s of machine %s: denied", asker, what, target)); err != nil {
			return err
		}
		if _, err := tx.Get(ctx, "Machine", target); err != nil {
			return nil
		}
		return s.event(ctx, tx, target, "AccessDenied", fmt.Sprintf("machine %s asked for %s of this machine: denied", asker, what))
	})
	if err != nil {
		s.log().Error("record a denied request", "machine", asker, "target", target, "err", err)
	}
}
