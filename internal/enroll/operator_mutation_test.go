package enroll

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// putJoinToken stores a JoinToken object as CreateToken or MintBootToken leaves it
// (boot: the per-boot label), expiring at exp (never when nil).
func (e *env) putJoinToken(id string, boot bool, exp *time.Time) {
	e.t.Helper()
	spec, _ := json.Marshal(resource.JoinTokenSpec{Profile: "worker", MaxUses: 1, ExpiresAt: exp, Hash: "00"})
	var labels map[string]string
	if boot {
		labels = map[string]string{BootTokenLabel: "true"}
	}
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		return tx.Create(e.ctx, &resource.Object{Kind: "JoinToken", Metadata: resource.Metadata{Name: id, Labels: labels}, Spec: spec})
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) names(kind string) []string {
	e.t.Helper()
	var out []string
	err := e.st.View(e.ctx, func(tx store.Tx) error {
		objs, err := listAll(e.ctx, tx, kind)
		for _, o := range objs {
			out = append(out, o.Metadata.Name)
		}
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// Join tokens are removed a week after they expired, per-boot ones a day after, not
// a moment before; every one that is due goes, in one audited purge; a housekeeping
// with nothing to remove writes nothing.
func TestHousekeepJoinTokenGrace(t *testing.T) {
	e := newEnv(t)
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	e.srv.Now = func() time.Time { return now }
	at := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	const day = 24 * time.Hour
	tokens := []struct {
		id   string
		boot bool
		exp  *time.Time
		kept bool
	}{
		{"jt-never", false, nil, true},
		{"jt-2d", false, at(2 * day), true},
		{"jt-week", false, at(7 * day), true},
		{"jt-week-and-1s", false, at(7*day + time.Second), false},
		{"jt-boot-day", true, at(day), true},
		{"jt-boot-day-and-1s", true, at(day + time.Second), false},
		{"jt-boot-2d", true, at(2 * day), false},
		{"jt-boot-week-and-1s", true, at(7*day + time.Second), false},
	}
	var kept []string
	for _, tk := range tokens {
		e.putJoinToken(tk.id, tk.boot, tk.exp)
		if tk.kept {
			kept = append(kept, tk.id)
		}
	}
	slices.Sort(kept)
	n, err := e.srv.Housekeep(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.names("JoinToken"); n != len(tokens)-len(kept) || !slices.Equal(got, kept) {
		t.Fatalf("removed %d, kept %v; want %d removed, kept %v", n, got, len(tokens)-len(kept), kept)
	}
	purges := e.auditEntries("purge")
	if len(purges) != 1 || purges[0].Kind != "JoinToken" || purges[0].Actor != "system" || purges[0].Summary != "4 expired join tokens removed" {
		t.Fatalf("purge audit entries %+v, want one for the 4 tokens", purges)
	}
	if n, err := e.srv.Housekeep(e.ctx); err != nil || n != 0 {
		t.Fatalf("second housekeeping: removed %d, %v", n, err)
	}
	if purges := e.auditEntries("purge"); len(purges) != 1 {
		t.Fatalf("a housekeeping that removed nothing was audited: %+v", purges)
	}
}

// An enrolled key is remembered for the whole replay window, its last instant
// included, and removed after it, without an audit entry (only join token purges
// are audited).
func TestHousekeepReplayWindowBound(t *testing.T) {
	e := newEnv(t)
	tok := e.token(TokenRequest{})
	if code, _, msg := e.enroll(e.newAgent(), tok, facts("52:54:00:00:05:01")); code != http.StatusOK {
		t.Fatalf("enroll: %d %s", code, msg)
	}
	// Without its (used, soon expired) token: only the key record is due.
	if err := e.st.Update(e.ctx, func(tx store.Tx) error { return tx.Delete(e.ctx, "JoinToken", tokenID(t, tok), "") }); err != nil {
		t.Fatal(err)
	}
	keys := e.names(enrollKeyKind)
	if len(keys) != 1 {
		t.Fatalf("enrolled key records %v, want one", keys)
	}
	created := *e.object(enrollKeyKind, keys[0]).Metadata.CreatedAt
	for _, tc := range []struct {
		age  time.Duration
		kept bool
	}{{e.srv.cfg.ReplayWindow, true}, {e.srv.cfg.ReplayWindow + time.Nanosecond, false}} {
		now := created.Add(tc.age)
		e.srv.Now = func() time.Time { return now }
		if _, err := e.srv.Housekeep(e.ctx); err != nil {
			t.Fatal(err)
		}
		if got := len(e.names(enrollKeyKind)) == 1; got != tc.kept {
			t.Fatalf("key record %s old: kept %v, want %v", tc.age, got, tc.kept)
		}
	}
	if purges := e.auditEntries("purge"); len(purges) != 0 {
		t.Fatalf("removing a key record was audited as a purge: %+v", purges)
	}
}

// GET /api/v1/enroll/jointokens lists per-boot tokens only when asked (?boot=true).
func TestListTokensBootFilter(t *testing.T) {
	e := newEnv(t)
	exp := e.clock.Now().Add(time.Hour)
	e.putJoinToken("jt-boot", true, &exp)
	e.putJoinToken("jt-plain", false, &exp)
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{"jt-plain"}},
		{"?boot=false", []string{"jt-plain"}},
		{"?boot=true", []string{"jt-boot", "jt-plain"}},
	} {
		rec := httptest.NewRecorder()
		e.srv.opListTokens(rec, httptest.NewRequest(http.MethodGet, "/api/v1/enroll/jointokens"+tc.query, nil))
		var list TokenList
		if err := json.Unmarshal(rec.Body.Bytes(), &list); rec.Code != http.StatusOK || err != nil {
			t.Fatalf("%q: %d %v", tc.query, rec.Code, err)
		}
		var got []string
		for _, it := range list.Items {
			got = append(got, it.ID)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("list%s: %v, want %v", tc.query, got, tc.want)
		}
	}
}
