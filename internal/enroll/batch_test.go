package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/kilnhq/kiln/internal/store"
)

// failingStore fails the first n write transactions after running them.
type failingStore struct {
	store.Store
	n atomic.Int32
}

func (f *failingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	if f.n.Add(-1) >= 0 {
		return f.Store.Update(ctx, func(tx store.Tx) error {
			if err := fn(tx); err != nil {
				return err
			}
			return errors.New("injected failure")
		})
	}
	return f.Store.Update(ctx, fn)
}

func (e *env) pendingEnrollment(tok, mac string) *enrollment {
	e.t.Helper()
	key, _ := newP256()
	csr, err := parseCSR(csrPEM(e.t, nil, key))
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := parseToken(e.srv.ca.tokenPub, tok)
	if err != nil {
		e.t.Fatal(err)
	}
	f := facts(mac)
	return &enrollment{req: &EnrollRequest{Token: tok, Facts: f}, remote: loopback, now: e.clock.Now(), claims: c,
		tokenHash: tokenHash(tok), macs: FactMACs(f), csr: csr}
}

func TestBatchCommitsTogetherAndFallsBack(t *testing.T) {
	e := newEnv(t)
	tok := e.token(TokenRequest{MaxUses: 2})
	items := func() []*batchItem {
		var out []*batchItem
		for _, mac := range []string{"52:54:00:00:05:01", "52:54:00:00:05:02", "52:54:00:00:05:03"} {
			out = append(out, &batchItem{e: e.pendingEnrollment(tok, mac), done: make(chan struct{})})
		}
		return out
	}
	// One transaction: the third is refused (two uses), the others enrolled.
	batch := items()
	e.srv.commitBatch(batch)
	if batch[0].err != nil || batch[1].err != nil || batch[2].err == nil {
		t.Fatalf("batch results: %v, %v, %v", batch[0].err, batch[1].err, batch[2].err)
	}
	mustContain(t, "third", batch[2].err.Error(), "used up (2 of 2 uses)")
	if e.tokenUses(tokenID(t, tok)) != 2 || e.count("Machine") != 2 {
		t.Fatal("batch did not commit its two enrollments")
	}
	// A batch whose transaction fails is redone one enrollment at a time.
	tok2 := e.token(TokenRequest{MaxUses: 5})
	fs := &failingStore{Store: e.st}
	fs.n.Store(1)
	e.srv.st = fs
	defer func() { e.srv.st = e.st }()
	batch = nil
	for _, mac := range []string{"52:54:00:00:06:01", "52:54:00:00:06:02", "52:54:00:00:06:03"} {
		batch = append(batch, &batchItem{e: e.pendingEnrollment(tok2, mac), done: make(chan struct{})})
	}
	e.srv.commitBatch(batch)
	for i, it := range batch {
		if it.err != nil || it.resp == nil {
			t.Fatalf("item %d after fallback: %v", i, it.err)
		}
	}
	if e.tokenUses(tokenID(t, tok2)) != 3 || e.count("Machine") != 5 {
		t.Fatalf("after fallback: uses %d, machines %d", e.tokenUses(tokenID(t, tok2)), e.count("Machine"))
	}
}

// The profile's enrollPolicy is cached between enrollments, but an enrollment is
// always checked against the policy the profile has when it commits.
func TestProfilePolicyChangesTakeEffect(t *testing.T) {
	e := newEnv(t)
	setProfile := func(spec string) {
		err := e.st.Update(e.ctx, func(tx store.Tx) error {
			p, err := tx.Get(e.ctx, "Profile", "db")
			if err != nil {
				return err
			}
			if spec == "" {
				return tx.Delete(e.ctx, "Profile", "db", "")
			}
			p.Spec = json.RawMessage(spec)
			return tx.Update(e.ctx, p)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	tok := e.token(TokenRequest{Profile: "db", MaxUses: 10})
	small := func(mac string) map[string]any { return facts(mac, "memory_mb", 1024) }
	if code, _, msg := e.enroll(e.newAgent(), tok, small("52:54:00:00:07:01")); code != http.StatusOK {
		t.Fatalf("before the change: %d %s", code, msg)
	}
	setProfile(`{"boot":{"agent":true},"enrollPolicy":["facts.memory_mb >= 65536"]}`)
	code, _, msg := e.enroll(e.newAgent(), tok, small("52:54:00:00:07:02"))
	if code != http.StatusForbidden {
		t.Fatalf("after the policy was tightened: %d %s", code, msg)
	}
	mustContain(t, "refusal", msg, "profile \"db\" expression 0 `facts.memory_mb >= 65536` is false")
	if code, _, msg := e.enroll(e.newAgent(), tok, facts("52:54:00:00:07:03", "memory_mb", 131072)); code != http.StatusOK {
		t.Fatalf("a machine the new policy admits: %d %s", code, msg)
	}
	setProfile(`{"boot":{"agent":true}}`)
	if code, _, msg := e.enroll(e.newAgent(), tok, small("52:54:00:00:07:04")); code != http.StatusOK {
		t.Fatalf("after the policy was dropped: %d %s", code, msg)
	}
	setProfile("")
	code, _, msg = e.enroll(e.newAgent(), tok, small("52:54:00:00:07:05"))
	if code != http.StatusForbidden {
		t.Fatalf("after the profile was deleted: %d %s", code, msg)
	}
	mustContain(t, "refusal", msg, `the token's profile "db" does not exist`)
	if u := e.tokenUses(tokenID(t, tok)); u != 3 {
		t.Fatalf("token uses %d, want 3", u)
	}
}
