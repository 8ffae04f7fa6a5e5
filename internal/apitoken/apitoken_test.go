package apitoken_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/apitoken"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

func TestNewRoles(t *testing.T) {
	for _, tc := range []struct {
		role string
		ok   bool
	}{
		{store.RoleAdmin, true},
		{store.RoleOperator, true},
		{store.RoleViewer, true},
		{"root", false},
		{"", false},
		{"Admin", false},
	} {
		tok, rec, err := apitoken.New(tc.role, "t", time.Now())
		if (err == nil) != tc.ok {
			t.Errorf("New(%q): %v, want ok=%v", tc.role, err, tc.ok)
			continue
		}
		if !tc.ok {
			if tok != "" || rec != nil {
				t.Errorf("New(%q) refused but returned a token", tc.role)
			}
			continue
		}
		if rec.Role != tc.role || rec.Name != "t" {
			t.Errorf("New(%q): record %+v", tc.role, rec)
		}
		if id, ok := apitoken.ParseID(tok); !ok || id != rec.ID {
			t.Errorf("New(%q): token's id %q (ok=%v), record's %q", tc.role, id, ok, rec.ID)
		}
	}
}

// The store keeps a hash of the token, never the token or its secret part.
func TestStoredHashOnly(t *testing.T) {
	ctx := context.Background()
	kit := testkit.NewStore(t)
	tok := testkit.APIToken(t, kit.Store, store.RoleOperator, "ci")
	id, _ := apitoken.ParseID(tok)
	secret := tok[strings.LastIndexByte(tok, '_')+1:]
	var stored *store.APIToken
	err := kit.Store.View(ctx, func(tx store.Tx) error {
		var err error
		stored, err = tx.GetAPIToken(ctx, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The package's contract: the SHA-256 of the whole token, so a lookup by id
	// and one hash compare check it.
	if sum := sha256.Sum256([]byte(tok)); stored.Hash != hex.EncodeToString(sum[:]) {
		t.Fatalf("stored hash %q, want the token's SHA-256", stored.Hash)
	}
	if strings.Contains(stored.Hash, secret) || stored.Hash == tok {
		t.Fatal("the store holds the token's secret")
	}
	// The database files do not hold it either.
	for _, f := range []string{"kiln.db", "kiln.db-wal"} {
		if b := readIfExists(t, kit.Dir, f); strings.Contains(b, secret) {
			t.Fatalf("%s holds the token's secret in clear", f)
		}
	}
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	kit := testkit.NewStore(t)
	admin := testkit.APIToken(t, kit.Store, store.RoleAdmin, "admin")
	viewer := testkit.APIToken(t, kit.Store, store.RoleViewer, "viewer")
	revoked := testkit.APIToken(t, kit.Store, store.RoleAdmin, "gone")
	revokedID, _ := apitoken.ParseID(revoked)
	if err := kit.Store.Update(ctx, func(tx store.Tx) error { return tx.RevokeAPIToken(ctx, revokedID, time.Now()) }); err != nil {
		t.Fatal(err)
	}
	// A token with a known id and a wrong secret; one with an unknown id.
	adminID, _ := apitoken.ParseID(admin)
	wrongSecret := "kiln_" + adminID + "_" + strings.Repeat("0", 64)
	if id, ok := apitoken.ParseID(wrongSecret); !ok || id != adminID {
		t.Fatal("the wrong-secret token is not well-formed: the case would not reach the hash check")
	}
	unknown, _, err := apitoken.New(store.RoleAdmin, "never stored", time.Now())
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, tok, role string // role "": refused
	}{
		{"admin", admin, store.RoleAdmin},
		{"viewer", viewer, store.RoleViewer},
		{"revoked", revoked, ""},
		{"unknown id", unknown, ""},
		{"wrong secret", wrongSecret, ""},
		{"malformed", "kiln_nope", ""},
		{"empty", "", ""},
		{"no prefix", strings.TrimPrefix(admin, "kiln_"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := apitoken.Authenticate(ctx, kit.Store, tc.tok)
			if tc.role == "" {
				if !errors.Is(err, apitoken.ErrInvalid) || got != nil {
					t.Fatalf("Authenticate: %+v, %v; want ErrInvalid", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if got.Role != tc.role {
				t.Fatalf("role %q, want %q", got.Role, tc.role)
			}
		})
	}
}

func readIfExists(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}
