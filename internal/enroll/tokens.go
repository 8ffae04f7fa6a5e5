package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Token limits.
const (
	MaxTokenUses = 1_000_000
	MaxTokenTTL  = 366 * 24 * time.Hour
	// DefaultTokenTTL applies when a request gives none.
	DefaultTokenTTL = time.Hour
	// BootTokenLabel marks the JoinToken objects of per-boot tokens.
	BootTokenLabel = "kiln.dev/boot-token"
)

// TokenRequest asks for a join token (POST /api/v1/enroll/jointokens).
type TokenRequest struct {
	Profile string            `json:"profile"`
	Labels  map[string]string `json:"labels,omitempty"`
	// MaxUses: how many enrollments the token allows (default 1).
	MaxUses int `json:"maxUses,omitempty"`
	// TTL: how long it is valid, a Go duration (default 1h, at most 366 days).
	TTL     string   `json:"ttl,omitempty"`
	MACs    []string `json:"macs,omitempty"`
	CIDRs   []string `json:"cidrs,omitempty"`
	Machine string   `json:"machine,omitempty"`
	// Policy: CEL expressions signed into the token, all of which must be true.
	Policy []string `json:"policy,omitempty"`
}

// TokenInfo describes a join token; it never carries the token itself.
type TokenInfo struct {
	ID          string            `json:"id"`
	Profile     string            `json:"profile"`
	Labels      map[string]string `json:"labels,omitempty"`
	Machine     string            `json:"machine,omitempty"`
	MACs        []string          `json:"macs,omitempty"`
	CIDRs       []string          `json:"cidrs,omitempty"`
	MaxUses     int               `json:"maxUses"`
	Uses        int               `json:"uses"`
	ExpiresAt   *time.Time        `json:"expiresAt,omitempty"`
	Revoked     bool              `json:"revoked"`
	Boot        bool              `json:"boot,omitempty"`
	LastUsedAt  *time.Time        `json:"lastUsedAt,omitempty"`
	LastMachine string            `json:"lastMachine,omitempty"`
}

// TokenCreated is the answer to a token request: the token is in it this once.
type TokenCreated struct {
	TokenInfo
	Token         string `json:"token"`
	Server        string `json:"server,omitempty"`
	CAFingerprint string `json:"caFingerprint"`
}

// InvalidError is bad operator input (the API answers 422).
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

func invalid(format string, a ...any) error { return &InvalidError{Err: fmt.Errorf(format, a...)} }

func newTokenID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "jt-" + hex.EncodeToString(b[:])
}

// CreateToken signs a new join token. The store keeps its id, scope, hash and use
// count; the token string is returned once and never stored.
func (s *Server) CreateToken(ctx context.Context, actor string, req TokenRequest) (*TokenCreated, error) {
	return s.CreateTokenAs(ctx, inventory.Actor{ID: actor}, req)
}

// CreateTokenAs is CreateToken for an operator with a role: below admin, a token
// whose holder could receive a secret (its profile refers to secrets, or a Secret's
// release rules select its labels or machine) is refused with an
// inventory.ForbiddenError.
func (s *Server) CreateTokenAs(ctx context.Context, actor inventory.Actor, req TokenRequest) (*TokenCreated, error) {
	now := s.now()
	if req.MaxUses == 0 {
		req.MaxUses = 1
	}
	if req.MaxUses < 1 || req.MaxUses > MaxTokenUses {
		return nil, invalid("maxUses: %d is not between 1 and %d", req.MaxUses, MaxTokenUses)
	}
	ttl := DefaultTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return nil, invalid("ttl: %q is not a positive duration like 30m, 24h or 720h", req.TTL)
		}
		ttl = d
	}
	if ttl > MaxTokenTTL {
		return nil, invalid("ttl: %s is longer than %s", ttl, MaxTokenTTL)
	}
	exp := now.Add(ttl).Truncate(time.Second)
	spec := resource.JoinTokenSpec{Profile: req.Profile, Labels: req.Labels, MaxUses: req.MaxUses, ExpiresAt: &exp,
		MACs: append([]string(nil), req.MACs...), CIDRs: append([]string(nil), req.CIDRs...), Machine: req.Machine, Policy: req.Policy}
	if err := spec.Validate(); err != nil {
		return nil, &InvalidError{Err: err}
	}
	if err := s.policy.validate(req.Policy); err != nil {
		return nil, &InvalidError{Err: err}
	}
	id := newTokenID()
	claims := &Claims{ID: id, Issuer: s.cfg.PublicURL, IssuedAt: now.Unix(), NotBefore: now.Unix(), Expires: exp.Unix(),
		Scope: Scope{Profile: spec.Profile, Labels: spec.Labels, MACs: spec.MACs, CIDRs: spec.CIDRs, Machine: spec.Machine, Policy: req.Policy}}
	tok, err := signToken(s.ca.tokenKey, claims)
	if err != nil {
		return nil, &InvalidError{Err: err}
	}
	spec.Hash = tokenHash(tok)
	rawSpec, _ := json.Marshal(spec)
	obj := &resource.Object{Kind: "JoinToken", Metadata: resource.Metadata{Name: id}, Spec: rawSpec, Status: json.RawMessage(`{"uses":0}`)}
	err = s.st.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(ctx, "Profile", spec.Profile); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return invalid("profile: %q does not exist", spec.Profile)
			}
			return err
		}
		if actor.Role != "" && actor.Role != store.RoleAdmin {
			why, err := inventory.TokenReachesSecrets(ctx, tx, spec.Profile, spec.Labels, spec.Machine)
			if err != nil {
				return fmt.Errorf("check what the join token reaches: %w", err)
			}
			if why != "" {
				return &inventory.ForbiddenError{Err: fmt.Errorf("join token: role %s may not create it, admin only: %s", actor.Role, why)}
			}
		}
		if err := tx.Create(ctx, obj); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: actor.ID, Action: "create", Kind: "JoinToken", Name: id,
			Summary: "join token created: " + scopeSummary(&spec, len(req.Policy))})
	})
	if err != nil {
		return nil, err
	}
	s.log().Info("join token created", "token_id", id, "profile", spec.Profile, "max_uses", spec.MaxUses, "actor", actor.ID)
	return &TokenCreated{TokenInfo: tokenInfo(obj), Token: tok, Server: s.cfg.PublicURL, CAFingerprint: s.ca.fingerprint}, nil
}

func scopeSummary(spec *resource.JoinTokenSpec, policies int) string {
	parts := []string{"profile " + spec.Profile, fmt.Sprintf("max uses %d", spec.MaxUses)}
	if spec.ExpiresAt != nil {
		parts = append(parts, "expires "+spec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if spec.Machine != "" {
		parts = append(parts, "machine "+spec.Machine)
	}
	if len(spec.MACs) > 0 {
		parts = append(parts, "macs "+strings.Join(spec.MACs, ","))
	}
	if len(spec.CIDRs) > 0 {
		parts = append(parts, "cidrs "+strings.Join(spec.CIDRs, ","))
	}
	if len(spec.Labels) > 0 {
		parts = append(parts, "labels "+strings.Join(slices.Sorted(maps.Keys(spec.Labels)), ","))
	}
	if policies > 0 {
		parts = append(parts, fmt.Sprintf("%d policy expressions", policies))
	}
	return strings.Join(parts, ", ")
}

func tokenInfo(o *resource.Object) TokenInfo {
	ti := TokenInfo{ID: o.Metadata.Name, Boot: o.Metadata.Labels[BootTokenLabel] == "true"}
	if spec, err := resource.Typed[resource.JoinTokenSpec](o); err == nil {
		ti.Profile, ti.Labels, ti.Machine, ti.MACs, ti.CIDRs = spec.Profile, spec.Labels, spec.Machine, spec.MACs, spec.CIDRs
		ti.MaxUses, ti.ExpiresAt, ti.Revoked = spec.MaxUses, spec.ExpiresAt, spec.Revoked
	}
	var st tokenStatus
	if len(o.Status) > 0 {
		_ = json.Unmarshal(o.Status, &st)
	}
	ti.Uses, ti.LastUsedAt, ti.LastMachine = st.Uses, st.LastUsedAt, st.LastMachine
	if st.RevokedAt != nil {
		ti.Revoked = true
	}
	return ti
}

// ListTokens lists join tokens (per-boot ones too when boot is true), by id.
func (s *Server) ListTokens(ctx context.Context, boot bool) ([]TokenInfo, error) {
	var out []TokenInfo
	err := s.st.View(ctx, func(tx store.Tx) error {
		after := ""
		for {
			objs, next, err := tx.List(ctx, "JoinToken", store.ListOptions{Limit: 1000, Continue: after})
			if err != nil {
				return err
			}
			for _, o := range objs {
				ti := tokenInfo(o)
				if ti.Boot && !boot {
					continue
				}
				out = append(out, ti)
			}
			if next == "" {
				return nil
			}
			after = next
		}
	})
	if out == nil {
		out = []TokenInfo{}
	}
	return out, err
}

// RevokeToken revokes a join token: no further enrollment with it. The revocation is
// recorded in the token's status (Kiln's), so re-applying an old manifest of the token
// does not undo it.
func (s *Server) RevokeToken(ctx context.Context, actor, id string) error {
	now := s.now()
	return s.st.Update(ctx, func(tx store.Tx) error {
		tok, err := tx.Get(ctx, "JoinToken", id)
		if err != nil {
			return fmt.Errorf("revoke join token %q: %w", id, err)
		}
		spec, err := resource.Typed[resource.JoinTokenSpec](tok)
		if err != nil {
			return err
		}
		var st tokenStatus
		if len(tok.Status) > 0 {
			_ = json.Unmarshal(tok.Status, &st)
		}
		if st.RevokedAt != nil && spec.Revoked {
			return nil
		}
		spec.Revoked = true
		if st.RevokedAt == nil {
			st.RevokedAt = &now
		}
		tok.Spec, _ = json.Marshal(spec)
		tok.Status, _ = json.Marshal(st)
		if err := tx.Update(ctx, tok); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: actor, Action: "revoke", Kind: "JoinToken", Name: id,
			Summary: fmt.Sprintf("join token revoked after %d uses", st.Uses)})
	})
}

// tokenHash is what the store keeps of a token: its SHA-256, hex.
func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}
