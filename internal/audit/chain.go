package audit

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// KeyLabel is the HKDF info string the chain key is derived with from the KEK.
const KeyLabel = "kiln audit chain v1"

// The checkpoint entry marks where the chain becomes keyed: it and every entry after
// it carry an HMAC; entries before it (written by a Kiln that did not key the chain)
// keep their SHA-256 hashes. Its own HMAC covers the previous entry's hash, so the
// unkeyed part cannot be rewritten either once a checkpoint follows it.
const (
	CheckpointAction = "chain-keyed"
	CheckpointKind   = "AuditChain"
	CheckpointName   = "chain"
)

// A retention checkpoint records that the entries up to one sequence were removed
// (audit retention): its summary names the last removed entry's sequence and hash
// (RetentionFormat), and verification of what is left starts from them. Being an
// entry of the keyed chain, it cannot be forged without the key, and removing it
// leaves entries that start at no recorded point.
const (
	RetentionAction = "retention"
	RetentionName   = "retention"
	// RetentionFormat is the summary (read back with fmt.Sscanf: every %s is
	// followed by a space): first and last removed sequence, age, then
	// the last removed entry's sequence and hash, and the sequence of the
	// chain-keyed checkpoint (0: not keyed), which may be among those removed.
	RetentionFormat = "removed entries %d to %d older than %s (retention); the chain continues from entry %d hash %s keyed from entry %d"
)

// IsRetention reports whether e is a retention checkpoint.
func IsRetention(e *Entry) bool {
	return e.Action == RetentionAction && e.Kind == CheckpointKind && e.Name == RetentionName
}

// RetentionPoint reads where a retention checkpoint says the chain continues from,
// and where the chain was keyed from (0: not keyed).
func RetentionPoint(e *Entry) (seq int64, hash string, keyedFrom int64, err error) {
	var first, last int64
	var age string
	if _, err := fmt.Sscanf(e.Summary, RetentionFormat, &first, &last, &age, &seq, &hash, &keyedFrom); err != nil {
		return 0, "", 0, fmt.Errorf("audit entry %d: retention checkpoint %q: %w", e.Seq, e.Summary, err)
	}
	return seq, hash, keyedFrom, nil
}

// IsCheckpoint reports whether e marks the start of the keyed chain.
func IsCheckpoint(e *Entry) bool {
	return e.Action == CheckpointAction && e.Kind == CheckpointKind && e.Name == CheckpointName
}

// KeyFromKEK derives the chain key from a key-encryption key (HKDF-SHA256, no salt:
// replicas sharing a KEK derive the same key).
func KeyFromKEK(kek []byte) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, kek, nil, KeyLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("derive the audit chain key: %w", err)
	}
	return k, nil
}

// Head is the chain's newest entry as anchored outside the database: a writer of the
// database alone can neither move it back nor forge it (it carries an HMAC).
type Head struct {
	Seq       int64  `json:"seq"`
	Hash      string `json:"hash"`
	KeyedFrom int64  `json:"keyedFrom"` // sequence of the checkpoint entry
	MAC       string `json:"mac"`
}

// Chain keys the hash chain and anchors its head in a file. It is safe for
// concurrent use.
type Chain struct {
	// OnAnchorError, if set, hears of head file writes that failed after a commit
	// (the entry is stored; the anchor lags until the next append).
	OnAnchorError func(error)

	key      []byte
	headFile string

	// wmu serializes head file writes; mu guards the fields below and is never
	// held across a write, so that a commit handing its head over never waits on
	// the disk.
	wmu sync.Mutex
	mu  sync.Mutex
	// written is the newest sequence written to the head file by this process;
	// frozen stops the anchor from moving once the database disagreed with it, so
	// that the evidence stays until an administrator looks.
	written int64
	frozen  bool
	// pending is the newest head handed to Anchor; flushing is set while a
	// goroutine writes it (and whatever newer arrives meanwhile).
	pending  Head
	flushing bool
	flushes  sync.WaitGroup
}

// NewChain returns a chain keyed with key whose head is anchored in headFile ("":
// no anchor).
func NewChain(key []byte, headFile string) *Chain {
	return &Chain{key: key, headFile: headFile}
}

// HeadFile is the anchor's path ("" for none).
func (c *Chain) HeadFile() string { return c.headFile }

// Hash is the keyed hash of e given e.PrevHash: HMAC-SHA256 over the same encoding as
// ComputeHash, under another domain string.
func (c *Chain) Hash(e *Entry) string {
	m := hmac.New(sha256.New, c.key)
	encode(m, "kiln-audit-v2-hmac", e)
	return hex.EncodeToString(m.Sum(nil))
}

// Seal fills in PrevHash and Hash (keyed) for an entry appended after (prevSeq, prevHash).
func (c *Chain) Seal(e *Entry, prevSeq int64, prevHash string) {
	e.Seq = prevSeq + 1
	e.PrevHash = cmpOrGenesis(prevHash)
	e.Hash = c.Hash(e)
}

func (c *Chain) headMAC(h Head) string {
	m := hmac.New(sha256.New, c.key)
	var buf [8]byte
	m.Write([]byte("kiln-audit-head-v1"))
	for _, n := range []int64{h.Seq, h.KeyedFrom} {
		binary.BigEndian.PutUint64(buf[:], uint64(n))
		m.Write(buf[:])
	}
	m.Write([]byte(h.Hash))
	return hex.EncodeToString(m.Sum(nil))
}

// ReadHead reads the anchored head; ok is false when there is no head file yet.
func (c *Chain) ReadHead() (h Head, ok bool, err error) {
	if c.headFile == "" {
		return Head{}, false, nil
	}
	b, err := os.ReadFile(c.headFile)
	if errors.Is(err, fs.ErrNotExist) {
		return Head{}, false, nil
	}
	if err != nil {
		return Head{}, false, fmt.Errorf("read the audit head file: %w", err)
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return Head{}, false, fmt.Errorf("audit head file %s: %w", c.headFile, err)
	}
	if !hmac.Equal([]byte(h.MAC), []byte(c.headMAC(h))) {
		return Head{}, false, fmt.Errorf("audit head file %s: its MAC does not match: written with another key, or edited", c.headFile)
	}
	return h, true, nil
}

// Record anchors (seq, hash) as the newest entry, if it is newer than what this
// process wrote before. It is called after the transaction that appended the entry
// committed; a crash in between leaves the anchor behind the database, which Verify
// accepts. The file is replaced atomically (mode 0600) but not synced: an anchor
// lost to a power cut only lags.
func (c *Chain) Record(seq int64, hash string, keyedFrom int64) error {
	if c.headFile == "" {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	skip := c.frozen || seq <= c.written
	c.mu.Unlock()
	if skip {
		return nil
	}
	h := Head{Seq: seq, Hash: hash, KeyedFrom: keyedFrom}
	h.MAC = c.headMAC(h)
	b, _ := json.Marshal(h)
	tmp, err := os.CreateTemp(filepath.Dir(c.headFile), ".audit-head-*")
	if err != nil {
		return fmt.Errorf("write the audit head file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), c.headFile)
	}
	if err != nil {
		return fmt.Errorf("write the audit head file %s: %w", c.headFile, err)
	}
	c.mu.Lock()
	c.written = seq
	c.mu.Unlock()
	return nil
}

// Anchor hands over a committed head to be recorded by a goroutine: a burst of
// commits costs one file write for the newest, not one each, and no commit waits
// for the disk (a file write costs more than an audited SQLite transaction). The
// anchor therefore trails the database by at most the write in flight; errors go
// to OnAnchorError. Flush waits for it.
func (c *Chain) Anchor(seq int64, hash string, keyedFrom int64) {
	if c.headFile == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq > c.pending.Seq {
		c.pending = Head{Seq: seq, Hash: hash, KeyedFrom: keyedFrom}
	}
	if c.flushing {
		return
	}
	c.flushing = true
	c.flushes.Add(1)
	go c.flush()
}

func (c *Chain) flush() {
	defer c.flushes.Done()
	for {
		c.mu.Lock()
		h := c.pending
		if c.frozen || h.Seq <= c.written {
			c.flushing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if err := c.Record(h.Seq, h.Hash, h.KeyedFrom); err != nil {
			if c.OnAnchorError != nil {
				c.OnAnchorError(err)
			}
			c.mu.Lock()
			c.flushing = false
			c.mu.Unlock()
			return
		}
	}
}

// Flush waits until the heads handed to Anchor so far are written.
func (c *Chain) Flush() { c.flushes.Wait() }

// Freeze stops Record from moving the anchor: the database disagreed with it.
func (c *Chain) Freeze() {
	c.mu.Lock()
	c.frozen = true
	c.mu.Unlock()
}

func cmpOrGenesis(h string) string {
	if h == "" {
		return GenesisHash
	}
	return h
}
