package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/store"
)

// testSecrets checks secret versions, handles and the per-object audit listing.
func testSecrets(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("Versions", func(t *testing.T) { testSecretVersions(t, open(t)) })
	t.Run("Handles", func(t *testing.T) { testSecretHandles(t, open(t)) })
	t.Run("HandleRace", func(t *testing.T) { RunHandleRace(t, []store.Store{open(t)}) })
	t.Run("AuditFor", func(t *testing.T) { testAuditFor(t, open(t)) })
	t.Run("CurrentKEK", func(t *testing.T) { testCurrentKEK(t, open(t)) })
}

func testCurrentKEK(t *testing.T, st store.Store) {
	ctx := context.Background()
	view(t, st, func(tx store.Tx) error {
		id, err := tx.CurrentSecretKEK(ctx)
		if err != nil || id != "" {
			return fmt.Errorf("before any: %q, %v", id, err)
		}
		if err := tx.SetCurrentSecretKEK(ctx, "k1"); err == nil {
			return fmt.Errorf("a view recorded a key id")
		}
		return nil
	})
	for _, id := range []string{"k1", "k2"} {
		update(t, st, func(tx store.Tx) error { return tx.SetCurrentSecretKEK(ctx, id) })
		view(t, st, func(tx store.Tx) error {
			got, err := tx.CurrentSecretKEK(ctx)
			if err != nil || got != id {
				return fmt.Errorf("after setting %s: %q, %v", id, got, err)
			}
			return nil
		})
	}
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.SetCurrentSecretKEK(ctx, "") }); err == nil {
		t.Fatal("an empty key id was recorded")
	}
}

func sealedVersion(name string, i int) *store.SecretVersion {
	return &store.SecretVersion{Name: name, KEKID: "k1", WrappedDEK: []byte{1, 2, byte(i)},
		Nonce: []byte{3, 4, byte(i)}, Ciphertext: []byte{5, 6, byte(i), 0}, CreatedBy: "token:t"}
}

func testSecretVersions(t *testing.T, st store.Store) {
	ctx := context.Background()
	update(t, st, func(tx store.Tx) error {
		for i := 1; i <= 3; i++ {
			v := sealedVersion("db", i)
			if err := tx.AddSecretVersion(ctx, v); err != nil {
				return err
			}
			if v.Version != int64(i) || v.CreatedAt.IsZero() {
				return fmt.Errorf("added version %d at %v, want version %d and a time", v.Version, v.CreatedAt, i)
			}
		}
		return tx.AddSecretVersion(ctx, sealedVersion("api", 1))
	})
	if err := st.Update(ctx, func(tx store.Tx) error {
		return tx.AddSecretVersion(ctx, &store.SecretVersion{Name: "x"})
	}); err == nil {
		t.Fatal("a version without ciphertext was stored")
	}
	view(t, st, func(tx store.Tx) error {
		v, err := tx.GetSecretVersion(ctx, "db", 0)
		if err != nil {
			return err
		}
		if v.Version != 3 || !bytes.Equal(v.Ciphertext, []byte{5, 6, 3, 0}) || v.KEKID != "k1" || v.CreatedBy != "token:t" {
			return fmt.Errorf("newest version: %+v", v)
		}
		v, err = tx.GetSecretVersion(ctx, "db", 2)
		if err != nil || !bytes.Equal(v.WrappedDEK, []byte{1, 2, 2}) || !bytes.Equal(v.Nonce, []byte{3, 4, 2}) {
			return fmt.Errorf("version 2: %+v, %v", v, err)
		}
		if _, err := tx.GetSecretVersion(ctx, "db", 9); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("missing version: %v, want ErrNotFound", err)
		}
		if _, err := tx.GetSecretVersion(ctx, "nope", 0); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("missing secret: %v, want ErrNotFound", err)
		}
		all, err := tx.ListSecretVersions(ctx, "")
		if err != nil || len(all) != 4 || all[0].Name != "api" || all[3].Version != 3 {
			return fmt.Errorf("all versions: %d, %v", len(all), err)
		}
		db, err := tx.ListSecretVersions(ctx, "db")
		if err != nil || len(db) != 3 || db[0].Version != 1 {
			return fmt.Errorf("versions of db: %d, %v", len(db), err)
		}
		return nil
	})
	// Re-wrap (KEK rotation) touches only the wrapped key and its id.
	update(t, st, func(tx store.Tx) error {
		if err := tx.RewrapSecretVersion(ctx, "db", 2, "k2", []byte{9, 9}); err != nil {
			return err
		}
		if err := tx.RewrapSecretVersion(ctx, "db", 7, "k2", []byte{9}); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("re-wrap a missing version: %v, want ErrNotFound", err)
		}
		return nil
	})
	view(t, st, func(tx store.Tx) error {
		v, err := tx.GetSecretVersion(ctx, "db", 2)
		if err != nil || v.KEKID != "k2" || !bytes.Equal(v.WrappedDEK, []byte{9, 9}) || !bytes.Equal(v.Ciphertext, []byte{5, 6, 2, 0}) {
			return fmt.Errorf("re-wrapped version: %+v, %v", v, err)
		}
		ids, err := tx.SecretKEKIDs(ctx)
		if err != nil || fmt.Sprint(ids) != "[k1 k2]" {
			return fmt.Errorf("kek ids %v, %v", ids, err)
		}
		return nil
	})
	// A rolled-back version is not kept and its number is reused.
	boom := errors.New("boom")
	if err := st.Update(ctx, func(tx store.Tx) error {
		if err := tx.AddSecretVersion(ctx, sealedVersion("db", 4)); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("rollback: %v", err)
	}
	update(t, st, func(tx store.Tx) error {
		v := sealedVersion("db", 4)
		if err := tx.AddSecretVersion(ctx, v); err != nil {
			return err
		}
		if v.Version != 4 {
			return fmt.Errorf("version after a rollback: %d, want 4", v.Version)
		}
		n, err := tx.DeleteSecretData(ctx, "db")
		if err != nil || n != 4 {
			return fmt.Errorf("delete: %d versions, %v", n, err)
		}
		return nil
	})
	view(t, st, func(tx store.Tx) error {
		if _, err := tx.GetSecretVersion(ctx, "db", 0); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("after delete: %v, want ErrNotFound", err)
		}
		if _, err := tx.GetSecretVersion(ctx, "api", 1); err != nil {
			return fmt.Errorf("another secret's version after delete: %v", err)
		}
		if err := tx.AddSecretVersion(ctx, sealedVersion("ro", 1)); err == nil {
			return fmt.Errorf("a view added a version")
		}
		if _, err := tx.DeleteSecretData(ctx, "api"); err == nil {
			return fmt.Errorf("a view deleted a secret's versions")
		}
		return nil
	})
}

func testSecretHandles(t *testing.T, st store.Store) {
	ctx := context.Background()
	t0 := time.Now().UTC().Round(0)
	h := &store.SecretHandle{IDHash: "aa", Secret: "db", Version: 2, Machine: "web-1", Channel: "ignition", ExpiresAt: t0.Add(5 * time.Minute), CreatedAt: t0}
	update(t, st, func(tx store.Tx) error {
		if err := tx.CreateSecretHandle(ctx, h); err != nil {
			return err
		}
		if err := tx.CreateSecretHandle(ctx, &store.SecretHandle{IDHash: "aa", Secret: "db", Version: 1, Machine: "m", ExpiresAt: t0}); !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("duplicate hash: %v, want ErrExists", err)
		}
		if err := tx.CreateSecretHandle(ctx, &store.SecretHandle{IDHash: "bb"}); err == nil {
			return fmt.Errorf("an incomplete handle was stored")
		}
		return tx.CreateSecretHandle(ctx, &store.SecretHandle{IDHash: "old", Secret: "db", Version: 1, Machine: "web-1", ExpiresAt: t0.Add(-time.Minute)})
	})
	view(t, st, func(tx store.Tx) error {
		got, err := tx.GetSecretHandle(ctx, "aa")
		if err != nil || got.Secret != "db" || got.Version != 2 || got.Machine != "web-1" || got.Channel != "ignition" ||
			!got.ExpiresAt.Equal(h.ExpiresAt) || !got.CreatedAt.Equal(t0) || got.UsedAt != nil {
			return fmt.Errorf("handle: %+v, %v", got, err)
		}
		if _, err := tx.GetSecretHandle(ctx, "zz"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("missing handle: %v", err)
		}
		if _, err := tx.UseSecretHandle(ctx, "aa", t0); err == nil {
			return fmt.Errorf("a view redeemed a handle")
		}
		return nil
	})
	used := t0.Add(time.Second)
	update(t, st, func(tx store.Tx) error {
		got, err := tx.UseSecretHandle(ctx, "aa", used)
		if err != nil || got.UsedAt == nil || !got.UsedAt.Equal(used) {
			return fmt.Errorf("first use: %+v, %v", got, err)
		}
		got, err = tx.UseSecretHandle(ctx, "aa", used.Add(time.Second))
		if !errors.Is(err, store.ErrHandleUsed) || got == nil || !got.UsedAt.Equal(used) || got.Machine != "web-1" {
			return fmt.Errorf("second use: %+v, %v, want ErrHandleUsed and the handle", got, err)
		}
		got, err = tx.UseSecretHandle(ctx, "old", used)
		if !errors.Is(err, store.ErrHandleExpired) || got == nil || got.UsedAt != nil {
			return fmt.Errorf("expired: %+v, %v, want ErrHandleExpired", got, err)
		}
		if _, err := tx.UseSecretHandle(ctx, "zz", used); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("unknown: %v, want ErrNotFound", err)
		}
		n, err := tx.PurgeSecretHandles(ctx, t0)
		if err != nil || n != 1 {
			return fmt.Errorf("purge: %d, %v", n, err)
		}
		return nil
	})
	view(t, st, func(tx store.Tx) error {
		if _, err := tx.GetSecretHandle(ctx, "old"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("purged handle: %v", err)
		}
		if _, err := tx.GetSecretHandle(ctx, "aa"); err != nil {
			return fmt.Errorf("unexpired handle after purge: %v", err)
		}
		return nil
	})
	// Deleting a secret's data removes its handles.
	update(t, st, func(tx store.Tx) error {
		_, err := tx.DeleteSecretData(ctx, "db")
		return err
	})
	view(t, st, func(tx store.Tx) error {
		if _, err := tx.GetSecretHandle(ctx, "aa"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("handle of a deleted secret: %v", err)
		}
		return nil
	})
}

// RunHandleRace redeems one handle from 16 goroutines spread over stores on one
// database (replicas) and checks that exactly one of them succeeds.
func RunHandleRace(t *testing.T, stores []store.Store) {
	ctx := context.Background()
	const tries = 16
	for round := range 5 {
		id := fmt.Sprintf("race-%d", round)
		update(t, stores[0], func(tx store.Tx) error {
			return tx.CreateSecretHandle(ctx, &store.SecretHandle{IDHash: id, Secret: "db", Version: 1, Machine: "web-1",
				Channel: "test", ExpiresAt: time.Now().Add(time.Minute)})
		})
		var wins, used atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, tries)
		for i := range tries {
			st := stores[i%len(stores)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				err := st.Update(ctx, func(tx store.Tx) error {
					_, err := tx.UseSecretHandle(ctx, id, time.Now())
					return err
				})
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, store.ErrHandleUsed):
					used.Add(1)
				default:
					errs <- err
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
		if wins.Load() != 1 || used.Load() != tries-1 {
			t.Fatalf("round %d: %d redeemed the handle and %d were told it was used; want 1 and %d", round, wins.Load(), used.Load(), tries-1)
		}
	}
}

func testAuditFor(t *testing.T, st store.Store) {
	ctx := context.Background()
	update(t, st, func(tx store.Tx) error {
		for i := range 6 {
			name := "db"
			if i%2 == 1 {
				name = "other"
			}
			if err := tx.AppendAudit(ctx, &audit.Entry{Actor: "t", Action: "release", Kind: "Secret", Name: name, Summary: fmt.Sprint(i)}); err != nil {
				return err
			}
		}
		return tx.AppendAudit(ctx, &audit.Entry{Actor: "t", Action: "create", Kind: "Machine", Name: "db"})
	})
	view(t, st, func(tx store.Tx) error {
		all, err := tx.ListAuditFor(ctx, "Secret", "db", 0, 0)
		if err != nil || len(all) != 3 || all[0].Summary != "0" || all[2].Summary != "4" {
			return fmt.Errorf("entries of secret db: %+v, %v", all, err)
		}
		page, err := tx.ListAuditFor(ctx, "Secret", "db", all[0].Seq, 1)
		if err != nil || len(page) != 1 || page[0].Summary != "2" {
			return fmt.Errorf("second page: %+v, %v", page, err)
		}
		none, err := tx.ListAuditFor(ctx, "Secret", "missing", 0, 10)
		if err != nil || len(none) != 0 {
			return fmt.Errorf("entries of a missing object: %+v, %v", none, err)
		}
		return nil
	})
	verifyAudit(t, st)
}
