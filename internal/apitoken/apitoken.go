// Package apitoken issues and checks operator API tokens. A token is
// "kiln_<id>_<secret>"; the store keeps the id, role and SHA-256 of the whole token.
// The secret has 256 bits of entropy, so a fast hash is the right one (no password
// stretching needed), and lookups are by id, so checking costs one point read.
package apitoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

// ErrInvalid: the token is malformed, unknown, wrong or revoked. Callers answer 401
// without saying which, so a probe learns nothing.
var ErrInvalid = errors.New("invalid API token")

const prefix = "kiln_"

// ValidRole reports whether r is a role a token can carry.
func ValidRole(r string) bool {
	return r == store.RoleAdmin || r == store.RoleOperator || r == store.RoleViewer
}

// New makes a token for role. The returned string is shown once and never stored.
func New(role, name string, now time.Time) (string, *store.APIToken, error) {
	if !ValidRole(role) {
		return "", nil, fmt.Errorf("role %q is not one of admin, operator, viewer", role)
	}
	var idb [6]byte
	var sec [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", nil, err
	}
	if _, err := rand.Read(sec[:]); err != nil {
		return "", nil, err
	}
	id := hex.EncodeToString(idb[:])
	tok := prefix + id + "_" + hex.EncodeToString(sec[:])
	return tok, &store.APIToken{ID: id, Name: name, Role: role, Hash: hash(tok), CreatedAt: now.UTC()}, nil
}

func hash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// ParseID returns the id part of a well-formed token.
func ParseID(tok string) (string, bool) {
	rest, ok := strings.CutPrefix(tok, prefix)
	if !ok {
		return "", false
	}
	id, sec, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 12 || len(sec) != 64 {
		return "", false
	}
	return id, true
}

// Authenticate checks a presented token against the store.
func Authenticate(ctx context.Context, st store.Store, tok string) (*store.APIToken, error) {
	id, ok := ParseID(tok)
	if !ok {
		return nil, ErrInvalid
	}
	var t *store.APIToken
	err := st.View(ctx, func(tx store.Tx) error {
		var err error
		t, err = tx.GetAPIToken(ctx, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrInvalid
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(hash(tok)), []byte(t.Hash)) != 1 || t.RevokedAt != nil {
		return nil, ErrInvalid
	}
	return t, nil
}
