// Package audit defines Kiln's append-only audit record and its hash chain.
// Every entry's hash covers its own fields and the previous entry's hash, so editing,
// deleting or reordering entries breaks the chain; a Verifier finds where.
//
// A database writer could still recompute a SHA-256 chain and cut its newest entries.
// So from a checkpoint entry on, the chain is keyed (HMAC-SHA256 under a key derived
// from the KEK, which the database never holds), and its head is anchored in a file
// beside the KEK (see Chain): the chain in the database may run ahead of the anchor,
// never behind it.
package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
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
	encode(h, "kiln-audit-v1", e)
	return hex.EncodeToString(h.Sum(nil))
}

// encode writes e's fields, length-prefixed, after a domain string.
func encode(h hash.Hash, domain string, e *Entry) {
	var buf [8]byte
	field := func(s string) {
		binary.BigEndian.PutUint64(buf[:], uint64(len(s)))
		h.Write(buf[:])
		h.Write([]byte(s))
	}
	field(domain)
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
	// Chain verifies keyed entries (the checkpoint and every entry after it); without
	// it a keyed entry cannot be checked and fails.
	Chain *Chain
	// Anchor is the head anchored outside the database, if any: the chain must reach
	// it, hold the same hash at its sequence and be keyed from where it says.
	Anchor *Head

	n        int64
	lastSeq  int64
	lastHash string
	keyed    bool
	// resumedAt is the sequence Resume started after; resumeSeen that a verified
	// retention checkpoint vouched for it.
	resumedAt   int64
	resumedHash string
	resumeSeen  bool
}

// Resume starts verification after entry seq, whose hash was hash, as a retention
// checkpoint recorded when it removed the entries up to seq. The checkpoint itself
// must then be among the entries verified (Finish checks it was).
func (v *Verifier) Resume(seq int64, hash string, keyed bool) {
	v.lastSeq, v.lastHash, v.keyed, v.resumedAt, v.resumedHash = seq, hash, keyed, seq, hash
}

// Next checks the next entry.
func (v *Verifier) Next(e *Entry) error {
	want := cmpOrGenesis(v.lastHash)
	if e.Seq != v.lastSeq+1 {
		return fmt.Errorf("audit entry %d: expected sequence %d: entries are missing or reordered", e.Seq, v.lastSeq+1)
	}
	if e.PrevHash != want {
		return fmt.Errorf("audit entry %d: previous-hash does not match entry %d: the chain was broken", e.Seq, v.lastSeq)
	}
	keyed := v.keyed || IsCheckpoint(e)
	if a := v.Anchor; a != nil && a.KeyedFrom > 0 && (e.Seq >= a.KeyedFrom) != keyed {
		return fmt.Errorf("audit entry %d: the anchored head says the chain is keyed from entry %d: the chain was rewritten", e.Seq, a.KeyedFrom)
	}
	var got string
	switch {
	case !keyed:
		got = ComputeHash(e)
	case v.Chain == nil:
		return fmt.Errorf("audit entry %d is keyed: verifying it needs the chain key (verify on the server)", e.Seq)
	default:
		got = v.Chain.Hash(e)
	}
	if !hmac.Equal([]byte(got), []byte(e.Hash)) {
		return fmt.Errorf("audit entry %d: hash mismatch: the entry was modified", e.Seq)
	}
	if a := v.Anchor; a != nil && e.Seq == a.Seq && e.Hash != a.Hash {
		return fmt.Errorf("audit entry %d differs from the head anchored outside the database: the chain was rewritten", e.Seq)
	}
	if v.resumedAt > 0 && IsRetention(e) {
		if seq, hash, _, err := RetentionPoint(e); err == nil && seq == v.resumedAt && hash == v.resumedHash {
			v.resumeSeen = true
		}
	}
	v.n++
	v.lastSeq, v.lastHash, v.keyed = e.Seq, e.Hash, keyed
	return nil
}

// Finish checks the chain's end against the head recorded in the database (kept
// apart from the entries) and against the anchored head: the database may be ahead
// of the anchor (a replica's anchor lags, or a crash came between commit and anchor)
// but never behind it.
func (v *Verifier) Finish(headSeq int64, headHash string) error {
	if v.resumedAt > 0 && !v.resumeSeen {
		return fmt.Errorf("audit chain starts after entry %d but no verified retention checkpoint records that point: entries were removed", v.resumedAt)
	}
	if headSeq != v.lastSeq || (headSeq > 0 && headHash != v.lastHash) {
		return fmt.Errorf("audit chain ends at entry %d but the recorded head is entry %d: entries were removed or added", v.lastSeq, headSeq)
	}
	if a := v.Anchor; a != nil && v.lastSeq < a.Seq {
		return fmt.Errorf("audit chain ends at entry %d but the head anchored outside the database is entry %d: the newest entries were removed", v.lastSeq, a.Seq)
	}
	return nil
}

// Count is how many entries were verified.
func (v *Verifier) Count() int64 { return v.n }
