package audit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// keyedChain is n unkeyed entries (a database from before), a checkpoint, and m
// keyed entries.
func keyedChain(c *Chain, n, m int) []Entry {
	out := chain(n)
	var seq int64
	prev := ""
	if n > 0 {
		seq, prev = out[n-1].Seq, out[n-1].Hash
	}
	cp := Entry{Time: time.Unix(5000, 0), Actor: "system", Action: CheckpointAction, Kind: CheckpointKind, Name: CheckpointName}
	c.Seal(&cp, seq, prev)
	out = append(out, cp)
	for i := range m {
		e := Entry{Time: time.Unix(int64(6000+i), 0), Actor: "token:a", Action: "update", Kind: "Machine", Name: "k", Summary: "changed"}
		c.Seal(&e, out[len(out)-1].Seq, out[len(out)-1].Hash)
		out = append(out, e)
	}
	return out
}

func walk(v *Verifier, entries []Entry) error {
	for i := range entries {
		if err := v.Next(&entries[i]); err != nil {
			return err
		}
	}
	last := entries[len(entries)-1]
	return v.Finish(last.Seq, last.Hash)
}

func TestKeyedChainMigrationAndDowngrade(t *testing.T) {
	key, err := KeyFromKEK([]byte(strings.Repeat("x", 32)))
	if err != nil {
		t.Fatal(err)
	}
	c := NewChain(key, "")
	entries := keyedChain(c, 3, 3)
	if err := walk(&Verifier{Chain: c}, entries); err != nil {
		t.Fatalf("migrated chain (SHA-256 before the checkpoint, HMAC after): %v", err)
	}
	if err := walk(&Verifier{}, entries); err == nil || !strings.Contains(err.Error(), "needs the chain key") {
		t.Fatalf("keyed chain without the key: %v", err)
	}
	other, _ := KeyFromKEK([]byte(strings.Repeat("y", 32)))
	if err := walk(&Verifier{Chain: NewChain(other, "")}, entries); err == nil || !strings.Contains(err.Error(), "entry 4: hash mismatch") {
		t.Fatalf("keyed chain under another key: %v", err)
	}
	// A writer without the key rewrites an old entry and every hash after it with
	// SHA-256, dropping the checkpoint's key: the anchor says where keying starts.
	forged := append([]Entry(nil), entries...)
	forged[1].Summary = "nothing"
	for i := 1; i < len(forged); i++ {
		forged[i].PrevHash = forged[i-1].Hash
		forged[i].Hash = ComputeHash(&forged[i])
	}
	if err := walk(&Verifier{Chain: c}, forged); err == nil {
		t.Fatal("chain rewritten with SHA-256 through the checkpoint verified")
	}
	forged[3].Action = "create" // no checkpoint any more: all SHA-256
	forged[3].Hash = ComputeHash(&forged[3])
	for i := 4; i < len(forged); i++ {
		forged[i].PrevHash = forged[i-1].Hash
		forged[i].Hash = ComputeHash(&forged[i])
	}
	anchor := &Head{Seq: 6, Hash: entries[5].Hash, KeyedFrom: 4}
	if err := walk(&Verifier{Chain: c, Anchor: anchor}, forged); err == nil || !strings.Contains(err.Error(), "keyed from entry 4") {
		t.Fatalf("chain downgraded to SHA-256 against the anchor: %v", err)
	}
}

func TestHeadFile(t *testing.T) {
	key, _ := KeyFromKEK([]byte(strings.Repeat("x", 32)))
	path := filepath.Join(t.TempDir(), "audit.head")
	c := NewChain(key, path)
	if _, ok, err := c.ReadHead(); ok || err != nil {
		t.Fatalf("no head file yet: %v %v", ok, err)
	}
	if err := c.Record(7, "abc", 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Record(5, "older", 2); err != nil { // an older commit finishing late
		t.Fatal(err)
	}
	h, ok, err := c.ReadHead()
	if err != nil || !ok || h.Seq != 7 || h.Hash != "abc" || h.KeyedFrom != 2 {
		t.Fatalf("head %+v %v %v, want seq 7", h, ok, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("head file mode: %v %v", fi.Mode(), err)
	}
	// A database writer who also edits the head file cannot make its MAC.
	b, _ := os.ReadFile(path)
	edited := strings.Replace(string(b), `"seq":7`, `"seq":5`, 1)
	if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadHead(); err == nil || !strings.Contains(err.Error(), "MAC does not match") {
		t.Fatalf("edited head file: %v", err)
	}
	c.Freeze()
	if err := c.Record(9, "newer", 2); err != nil {
		t.Fatal(err)
	}
	if b2, _ := os.ReadFile(path); string(b2) != edited {
		t.Fatalf("a frozen anchor moved: %s", b2)
	}
}
