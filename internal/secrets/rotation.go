package secrets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
)

// Key rotation, and why it survives a crash at any point.
//
//  1. A new key is written to kek.key.new (0600, synced). The database still names
//     the old key: a crash here leaves a spare file, which Reconcile removes.
//  2. One store transaction re-wraps every data key with the new key, runs the
//     RotationHooks (other sealed material) and records the new key's id as current.
//     It commits or not as a whole; values themselves are not re-encrypted.
//  3. The old key is written to kek.key.old, then kek.key.new is renamed over kek.key
//     (rename is atomic: kek.key is always one whole key). A crash between 2 and 3
//     leaves the database naming the key in kek.key.new: at the next start LoadKeyRing
//     loads it too and Reconcile finishes the swap.
//  4. kek.key.old is removed once no stored version is wrapped with it.
//
// At every point kek.key exists and the keys every row needs are on disk.
//
// Replicas: each server reads its own key file. After a rotation, copy the new
// kek.key to the other replicas and restart them; until then they refuse to set
// values (the store names a key they do not have) and cannot decrypt re-wrapped rows.

// RotationResult reports a rotation.
type RotationResult struct {
	OldKEKID string `json:"oldKekId"`
	NewKEKID string `json:"newKekId"`
	// Rewrapped is how many data keys were re-wrapped.
	Rewrapped int `json:"rewrapped"`
}

// RotateKEK replaces the key-encryption key: every data key is re-wrapped in one
// transaction, then the key file is replaced. The caller checks the admin role.
func (s *Service) RotateKEK(ctx context.Context, actor inventory.Actor) (*RotationResult, error) {
	path := s.Keys.path
	if path == "" {
		return nil, errors.New("rotate key-encryption key: this server's key was not loaded from a file")
	}
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	old := s.Keys.currentKEK()
	raw, err := newKEK()
	if err != nil {
		return nil, err
	}
	next, err := newKEKEntry(raw)
	if err != nil {
		return nil, err
	}
	clear(raw)
	if err := writeKEKFile(path+".new", next.raw); err != nil {
		return nil, fmt.Errorf("rotate key-encryption key: write %s.new: %w", path, err)
	}
	s.Keys.add(next)
	res := &RotationResult{OldKEKID: old.id, NewKEKID: next.id}
	var after []func()
	err = s.Store.Update(ctx, func(tx store.Tx) error {
		after = after[:0]
		if err := s.checkKeyedWith(ctx, tx); err != nil {
			return err
		}
		vs, err := tx.ListSecretVersions(ctx, "")
		if err != nil {
			return err
		}
		res.Rewrapped = 0
		for i := range vs {
			v := &vs[i]
			wrapped, err := s.Keys.rewrap(v, next)
			if err != nil {
				return err
			}
			if err := tx.RewrapSecretVersion(ctx, v.Name, v.Version, next.id, wrapped); err != nil {
				return err
			}
			res.Rewrapped++
		}
		for _, hook := range s.RotationHooks {
			fn, err := hook(ctx, tx, old.raw, next.raw)
			if err != nil {
				return fmt.Errorf("rotation hook: %w", err)
			}
			if fn != nil {
				after = append(after, fn)
			}
		}
		if err := tx.SetCurrentSecretKEK(ctx, next.id); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor.ID, "rotate-key", "KEK", next.id,
			fmt.Sprintf("key-encryption key %s replaced by %s; re-wrapped %d data keys", old.id, next.id, res.Rewrapped))
	})
	if err != nil {
		s.Keys.forget(next.id)
		if rerr := os.Remove(path + ".new"); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			s.log().Warn("remove the unused next key file", "path", path+".new", "err", rerr)
		}
		return nil, fmt.Errorf("rotate key-encryption key: %w", err)
	}
	for _, fn := range after {
		fn()
	}
	s.log().Info("key-encryption key rotated", "old_kek", old.id, "new_kek", next.id, "rewrapped", res.Rewrapped, "actor", actor.ID)
	if err := s.finishRotation(ctx, old, next); err != nil {
		return res, fmt.Errorf("rotate key-encryption key: the store now uses key %s, but replacing %s failed (Kiln finishes it at its next start; the new key is in %s.new): %w",
			next.id, path, path, err)
	}
	return res, nil
}

// finishRotation is step 3 and 4: the files follow the committed store.
func (s *Service) finishRotation(ctx context.Context, old, next *kek) error {
	path := s.Keys.path
	s.Keys.promote(next.id) // this process uses the new key whatever the files do
	if err := writeKEKFile(path+".old", old.raw); err != nil {
		return fmt.Errorf("keep the previous key in %s.old: %w", path, err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	return s.dropUnusedOld(ctx, old.id)
}

// dropUnusedOld removes kek.key.old once no stored version is wrapped with it.
func (s *Service) dropUnusedOld(ctx context.Context, oldID string) error {
	var ids []string
	if err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		ids, err = tx.SecretKEKIDs(ctx)
		return err
	}); err != nil {
		return err
	}
	if slices.Contains(ids, oldID) {
		s.log().Warn("keeping the previous key-encryption key: stored versions still use it", "kek", oldID, "path", s.Keys.path+".old")
		return nil
	}
	if err := os.Remove(s.Keys.path + ".old"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	s.Keys.forget(oldID)
	return syncDir(filepath.Dir(s.Keys.path))
}

// Reconcile checks, at start, that this server has every key the store needs, records
// the key on first start, and finishes or cleans up an interrupted rotation.
func (s *Service) Reconcile(ctx context.Context) error {
	var cur string
	var used []string
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		var err error
		if cur, err = tx.CurrentSecretKEK(ctx); err != nil {
			return err
		}
		if used, err = tx.SecretKEKIDs(ctx); err != nil {
			return err
		}
		if cur == "" {
			cur = s.Keys.CurrentID()
			return tx.SetCurrentSecretKEK(ctx, cur)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("secrets: check the key-encryption key: %w", err)
	}
	have := s.Keys.IDs()
	for _, id := range append([]string{cur}, used...) {
		if !slices.Contains(have, id) {
			return fmt.Errorf("secrets: the store's secrets are keyed with key-encryption key %s, which this server does not have (it has %v): give it the right key file: %w",
				id, have, ErrKeyUnavailable)
		}
	}
	path := s.Keys.path
	mine := s.Keys.CurrentID()
	if path == "" {
		if cur != mine {
			return fmt.Errorf("secrets: the store is keyed with key-encryption key %s, not this server's %s: %w", cur, mine, ErrKeyUnavailable)
		}
		return nil
	}
	if cur != mine {
		// The rotation committed but the key file was not replaced: finish it.
		k, err := readKEK(path + ".new")
		if err != nil || KEKID(k) != cur {
			return fmt.Errorf("secrets: the store is keyed with key-encryption key %s, which is not in %s but only in %s.old (was a database from before a rotation restored?): put that key in %s: %w",
				cur, path, path, path, ErrKeyUnavailable)
		}
		next, _ := s.Keys.lookup(cur)
		old := s.Keys.currentKEK()
		s.log().Warn("finishing an interrupted key-encryption key rotation", "old_kek", old.id, "new_kek", cur)
		if err := s.finishRotation(ctx, old, next); err != nil {
			return fmt.Errorf("secrets: finish the key rotation: %w", err)
		}
		return nil
	}
	// The store uses this server's key: a left-over next key is from a rotation that
	// did not commit.
	if k, err := readKEK(path + ".new"); err == nil {
		id := KEKID(k)
		if id != cur && !slices.Contains(used, id) {
			s.log().Warn("removing the next key of a key rotation that did not commit", "kek", id)
			if err := os.Remove(path + ".new"); err != nil {
				return err
			}
			s.Keys.forget(id)
		}
	}
	if k, err := readKEK(path + ".old"); err == nil {
		if err := s.dropUnusedOld(ctx, KEKID(k)); err != nil {
			return fmt.Errorf("secrets: %w", err)
		}
	}
	return nil
}
