// Package audit defines Kiln's append-only audit record and its SHA-256 hash chain.
// Every entry's hash covers its own fields and the previous entry's hash, so editing,
// deleting or reordering entries breaks the chain; Verify finds where.
package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"
)

// Entry is one audited change. Summary lists changed field paths, never values.
type Entry struct {
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Actor    string    `json:"actor"`  // API token id, or "system"
	Action   string    `json:"action"` // create, update, delete, revoke, ...
	Kind     string    `json:"kind"`
	Name     string    `json:"name"`
	Summary  string    `json:"summary,omitempty"`
	PrevHash string    `json:"prevHash"`
	Hash     string    `json:"hash"`
}

// GenesisHash is the PrevHash of the first entry.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// ComputeHash returns the chain hash of e given e.PrevHash. Fields are length-prefixed
// so that no two different entries encode alike.
func ComputeHash(e *Entry) string {
	h := sha256.New()
	var buf [8]byte
	field := func(s string) {
		binary.BigEndian.PutUint64(buf[:], uint64(len(s)))
		h.Write(buf[:])
		h.Write([]byte(s))
	}
	field("kiln-audit-v1")
	field(e.PrevHash)
	binary.BigEndian.PutUint64(buf[:], uint64(e.Seq))
	h.Write(buf[:])
	binary.BigEndian.PutUint64(buf[:], uint64(e.Time.UTC().UnixNano()))
	h.Write(buf[:])
	field(e.Actor)
	field(e.Action)
	field(e.Kind)
	field(e.Name)
	field(e.Summary)
	return hex.EncodeToString(h.Sum(nil))
}

// Seal fills in PrevHash and Hash for an entry appended after (prevSeq, prevHash).
func Seal(e *Entry, prevSeq int64, prevHash string) {
	if prevHash == "" {
		prevHash = GenesisHash
	}
	e.Seq = prevSeq + 1
	e.PrevHash = prevHash
	e.Hash = ComputeHash(e)
}

// Verifier checks entries one at a time, in sequence order.
type Verifier struct {
	n        int64
	lastSeq  int64
	lastHash string
}

// Next checks the next entry.
func (v *Verifier) Next(e *Entry) error {
	want := v.lastHash
	if want == "" {
		want = GenesisHash
	}
	if e.Seq != v.lastSeq+1 {
		return fmt.Errorf("audit entry %d: expected sequence %d: entries are missing or reordered", e.Seq, v.lastSeq+1)
	}
	if e.PrevHash != want {
		return fmt.Errorf("audit entry %d: previous-hash does not match entry %d: the chain was broken", e.Seq, v.lastSeq)
	}
	if got := ComputeHash(e); got != e.Hash {
		return fmt.Errorf("audit entry %d: hash mismatch: the entry was modified", e.Seq)
	}
	v.n++
	v.lastSeq, v.lastHash = e.Seq, e.Hash
	return nil
}

// Finish checks the chain's end against the recorded head (seq and hash kept apart from
// the entries), which detects removal of the newest entries.
func (v *Verifier) Finish(headSeq int64, headHash string) error {
	if headSeq != v.lastSeq || (headSeq > 0 && headHash != v.lastHash) {
		return fmt.Errorf("audit chain ends at entry %d but the recorded head is entry %d: entries were removed or added", v.lastSeq, headSeq)
	}
	return nil
}

// Count is how many entries were verified.
func (v *Verifier) Count() int64 { return v.n }
