// Package secrets keeps Kiln's secrets and delivers them, with per-machine configs,
// only to the machines their release rules name.
//
// Storage: each secret version is encrypted at rest with its own data key, wrapped by
// a key-encryption key (KEK) kept outside the database (<data-dir>/kek.key; see
// crypto.go and LoadOrCreateKEK). The Secret inventory object holds the release rules
// (spec.machines, spec.labels) and status.version; values are only ever in
// secret_versions, encrypted.
//
// Release: a machine may receive a secret if its name is in spec.machines, or if every
// label of spec.labels is among the machine's metadata.labels — labels an operator (or
// the join token that enrolled it) set. Facts the machine reports are in
// status.facts and never count.
//
// Delivery: inlined into configs rendered for the machine over its mTLS channel, or
// as single-use handles (a URL with an unguessable id and a short TTL) for places that
// cannot do mTLS. Every release, denial, reveal and reuse is an audit entry; values
// never appear in logs, errors, events, audit summaries or listings.
package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Defaults for the Service's limits.
const (
	DefaultMaxValueBytes   = 64 << 10
	DefaultHandleTTL       = 5 * time.Minute
	DefaultMaxHandleTTL    = time.Hour
	DefaultHandleRetention = 7 * 24 * time.Hour
)

var (
	// ErrDenied: the machine is not among those the secret may be released to.
	ErrDenied = errors.New("not released to this machine")
	// ErrTooLarge: a value is larger than the configured limit.
	ErrTooLarge = errors.New("secret value too large")
	// ErrNotPublic: a config that refers to secrets was asked for over plain HTTP.
	ErrNotPublic = errors.New("config refers to secrets: served over mTLS only")
	// ErrBadHandle: a handle id that is not one Kiln could have issued.
	ErrBadHandle = errors.New("malformed secret handle id")
	// ErrNoHTTPS: a handle URL was asked for and Kiln knows no https URL to put in it.
	ErrNoHTTPS = errors.New("secret handles are served over HTTPS only, and this server has no HTTPS URL (--https-listen, --enroll-url)")
	// ErrHandleOverHTTP: a handle was presented over plain HTTP; it is burnt.
	ErrHandleOverHTTP = errors.New("secret handles are served over HTTPS only: this handle crossed the network in clear and is now burnt")
)

// InputError is bad input from an operator or a template: the API answers 422.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func invalid(format string, a ...any) error { return &InputError{Err: fmt.Errorf(format, a...)} }

// RotationHook re-seals, inside the rotation's transaction, other material sealed with
// the key-encryption key (the enrollment CA's key): a rotation that does not re-seal
// it would leave it unreadable. An error aborts the rotation. afterCommit, if not nil,
// runs once the rotation committed (to switch an in-memory key).
type RotationHook func(ctx context.Context, tx store.Tx, oldKEK, newKEK []byte) (afterCommit func(), err error)

// Service manages secrets. Set Store and Keys; the rest has defaults.
type Service struct {
	Store store.Store
	Keys  *KeyRing
	// Logger never receives a value.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxValueBytes bounds a secret value (DefaultMaxValueBytes).
	MaxValueBytes int
	// HandleTTL is a handle's time to live unless a template asks for another
	// (DefaultHandleTTL); MaxHandleTTL bounds what a template may ask (DefaultMaxHandleTTL).
	HandleTTL, MaxHandleTTL time.Duration
	// HandleRetention is how long used and expired handles are kept so that a late
	// request still gets 410 and raises an alert (DefaultHandleRetention).
	HandleRetention time.Duration
	// MaxConfigBytes bounds a rendered config (config.DefaultMaxBytes).
	MaxConfigBytes int
	// PublicURL is the base URL at which machines reach Kiln; it is the base of
	// handle URLs only when it is https.
	PublicURL string
	// HandleURL is the https base URL of handle URLs (Kiln's HTTPS listener). A handle
	// is the secret while it travels: a handle URL is never http://. Empty: PublicURL
	// or the request's URL when one is https, else rendering a handle fails.
	HandleURL string
	// CACertPEM is Kiln's CA: rendered Ignition and cloud-config trust it for their
	// fetches from Kiln (config.AddCA). Empty: configs are left as rendered.
	CACertPEM []byte
	// RotationHooks run in the rotation transaction.
	RotationHooks []RotationHook

	// keyMu: setting values (read lock) does not run while the key rotates (write lock)
	// in this process; across replicas, CurrentSecretKEK in the store decides.
	keyMu sync.RWMutex
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Service) maxValue() int {
	if s.MaxValueBytes > 0 {
		return s.MaxValueBytes
	}
	return DefaultMaxValueBytes
}

// VersionInfo describes one stored version, never its value.
type VersionInfo struct {
	Name      string    `json:"name"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	CreatedBy string    `json:"createdBy,omitempty"`
	KEKID     string    `json:"kekId"`
}

func info(v *store.SecretVersion) VersionInfo {
	return VersionInfo{Name: v.Name, Version: v.Version, CreatedAt: v.CreatedAt, CreatedBy: v.CreatedBy, KEKID: v.KEKID}
}

func (s *Service) audit(ctx context.Context, tx store.Tx, actor, action, kind, name, summary string) error {
	e := &audit.Entry{Time: s.now(), Actor: actor, Action: action, Kind: kind, Name: name, Summary: summary}
	if err := tx.AppendAudit(ctx, e); err != nil {
		return fmt.Errorf("audit %s of %s %q: %w", action, kind, name, err)
	}
	return nil
}

func (s *Service) event(ctx context.Context, tx store.Tx, machine, typ, msg string) error {
	if err := tx.AddEvent(ctx, &store.Event{Machine: machine, Time: s.now(), Type: typ, Message: msg}); err != nil {
		return fmt.Errorf("event on machine %q: %w", machine, err)
	}
	return nil
}

// checkKeyedWith refuses to write values under a KEK the store does not record as
// current (another replica rotated it); on first use it records this server's key.
func (s *Service) checkKeyedWith(ctx context.Context, tx store.Tx) error {
	cur, err := tx.CurrentSecretKEK(ctx)
	if err != nil {
		return err
	}
	mine := s.Keys.CurrentID()
	switch cur {
	case mine:
		return nil
	case "":
		return tx.SetCurrentSecretKEK(ctx, mine)
	}
	return fmt.Errorf("the secrets are keyed with key-encryption key %s but this server's key is %s (was the key rotated on another replica? install that key file and restart): %w",
		cur, mine, ErrKeyUnavailable)
}

// Set stores value as the next version of secret name, creating the Secret object
// (with no release rules: no machine may receive it yet) if it does not exist.
func (s *Service) Set(ctx context.Context, actor inventory.Actor, name string, value []byte) (*VersionInfo, error) {
	if err := resource.ValidateName(name); err != nil {
		return nil, invalid("secret name %q is not valid (lower-case letters, digits, '-' and '.')", name)
	}
	if len(value) == 0 {
		return nil, invalid("secret %q: the value is empty", name)
	}
	if max := s.maxValue(); len(value) > max {
		return nil, fmt.Errorf("secret %q: the value is %d bytes, more than the limit of %d: %w", name, len(value), max, ErrTooLarge)
	}
	s.keyMu.RLock()
	defer s.keyMu.RUnlock()
	var out VersionInfo
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		if err := s.checkKeyedWith(ctx, tx); err != nil {
			return err
		}
		obj, err := tx.Get(ctx, "Secret", name)
		created := false
		if errors.Is(err, store.ErrNotFound) {
			obj = &resource.Object{APIVersion: resource.APIVersion, Kind: "Secret", Metadata: resource.Metadata{Name: name}, Spec: json.RawMessage(`{}`)}
			if err := tx.Create(ctx, obj); err != nil {
				return err
			}
			created = true
		} else if err != nil {
			return err
		}
		var newest int64
		if v, err := tx.GetSecretVersion(ctx, name, 0); err == nil {
			newest = v.Version
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		v := &store.SecretVersion{Name: name, Version: newest + 1, CreatedAt: s.now(), CreatedBy: actor.ID}
		if err := s.Keys.seal(v, value); err != nil {
			return fmt.Errorf("encrypt secret %q: %w", name, err)
		}
		want := v.Version
		if err := tx.AddSecretVersion(ctx, v); err != nil {
			return err
		}
		if v.Version != want {
			return fmt.Errorf("secret %q: stored as version %d, sealed as %d: %w", name, v.Version, want, store.ErrConflict)
		}
		if err := setStatusVersion(obj, v.Version); err != nil {
			return err
		}
		if err := tx.Update(ctx, obj); err != nil {
			return err
		}
		if created {
			if err := s.audit(ctx, tx, actor.ID, "create", "Secret", name,
				"created by secret set, with no release rules (no machine may receive it until spec.machines or spec.labels name it)"); err != nil {
				return err
			}
		}
		out = info(v)
		return s.audit(ctx, tx, actor.ID, "set-value", "Secret", name,
			fmt.Sprintf("stored version %d, encrypted (data key wrapped by key-encryption key %s)", v.Version, v.KEKID))
	})
	if err != nil {
		return nil, fmt.Errorf("set secret %q: %w", name, err)
	}
	s.log().Info("secret value set", "secret", name, "version", out.Version, "actor", actor.ID)
	return &out, nil
}

// setStatusVersion records the newest version in the Secret's status (the VERSION
// column of `kiln get secrets`), keeping whatever else status holds.
func setStatusVersion(obj *resource.Object, version int64) error {
	st := map[string]any{}
	if len(obj.Status) > 0 {
		if err := json.Unmarshal(obj.Status, &st); err != nil || st == nil {
			st = map[string]any{}
		}
	}
	st["version"] = version
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	obj.Status = b
	return nil
}

// Versions lists a secret's versions (never values).
func (s *Service) Versions(ctx context.Context, name string) ([]VersionInfo, error) {
	var out []VersionInfo
	err := s.Store.View(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(ctx, "Secret", name); err != nil {
			return err
		}
		vs, err := tx.ListSecretVersions(ctx, name)
		if err != nil {
			return err
		}
		out = make([]VersionInfo, len(vs))
		for i := range vs {
			out[i] = info(&vs[i])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("versions of secret %q: %w", name, err)
	}
	return out, nil
}

// Reveal decrypts a version (0: the newest) for an operator; the caller checks the
// admin role. The reveal is audited before the value is returned.
func (s *Service) Reveal(ctx context.Context, actor inventory.Actor, name string, version int64) ([]byte, *VersionInfo, error) {
	var value []byte
	var vi VersionInfo
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(ctx, "Secret", name); err != nil {
			return err
		}
		v, err := tx.GetSecretVersion(ctx, name, version)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) && version <= 0 {
				return fmt.Errorf("secret %q has no value yet (kiln secret set): %w", name, store.ErrNotFound)
			}
			return err
		}
		if value, err = s.Keys.open(v); err != nil {
			return err
		}
		vi = info(v)
		return s.audit(ctx, tx, actor.ID, "reveal", "Secret", name, fmt.Sprintf("revealed version %d to %s", v.Version, actor.ID))
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reveal secret %q: %w", name, err)
	}
	s.log().Info("secret revealed", "secret", name, "version", vi.Version, "actor", actor.ID)
	return value, &vi, nil
}

// Delete removes a Secret object with every version and handle, unless a Profile or a
// Machine still refers to it.
func (s *Service) Delete(ctx context.Context, actor inventory.Actor, name string) error {
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(ctx, "Secret", name); err != nil {
			return err
		}
		if err := checkNotReferenced(ctx, tx, name); err != nil {
			return err
		}
		if err := tx.Delete(ctx, "Secret", name, ""); err != nil {
			return err
		}
		n, err := tx.DeleteSecretData(ctx, name)
		if err != nil {
			return err
		}
		return s.audit(ctx, tx, actor.ID, "delete", "Secret", name, fmt.Sprintf("deleted with its %d versions and their handles", n))
	})
	if err != nil {
		return fmt.Errorf("delete secret %q: %w", name, err)
	}
	s.log().Info("secret deleted", "secret", name, "actor", actor.ID)
	return nil
}

// checkNotReferenced refuses to delete a secret a profile lists or a machine's BMC
// uses (the inventory refuses the same for its own deletes).
func checkNotReferenced(ctx context.Context, tx store.Tx, name string) error {
	for _, kind := range []string{"Profile", "Machine"} {
		cont := ""
		for {
			page, next, err := tx.List(ctx, kind, store.ListOptions{Limit: 1000, Continue: cont})
			if err != nil {
				return err
			}
			for _, o := range page {
				if path := refersTo(o, name); path != "" {
					return invalid("%s %q still refers to it (%s)", lower(kind), o.Metadata.Name, path)
				}
			}
			if next == "" {
				break
			}
			cont = next
		}
	}
	return nil
}

func refersTo(o *resource.Object, secret string) string {
	switch o.Kind {
	case "Profile":
		p, err := resource.Typed[resource.ProfileSpec](o)
		if err != nil {
			return ""
		}
		for i, n := range p.Secrets {
			if n == secret {
				return fmt.Sprintf("spec.secrets[%d]", i)
			}
		}
	case "Machine":
		m, err := resource.Typed[resource.MachineSpec](o)
		if err == nil && m.BMC != nil && m.BMC.CredentialsSecret == secret {
			return "spec.bmc.credentialsSecret"
		}
	}
	return ""
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Audit lists the audit entries about a secret: who set, revealed and received it.
func (s *Service) Audit(ctx context.Context, name string, after int64, limit int) ([]audit.Entry, error) {
	var out []audit.Entry
	err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.ListAuditFor(ctx, "Secret", name, after, limit)
		return err
	})
	return out, err
}
