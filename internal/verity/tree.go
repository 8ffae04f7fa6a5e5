package verity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Tree is a hash tree as it lies on the hash device after the superblock: the
// top level first, level 0 (the data blocks' digests) last.
type Tree struct {
	sb     *Superblock
	levels [][]byte // level 0 first
}

// ErrRootHash: the hash tree is not the one the root hash (and so its signer)
// vouches for.
var ErrRootHash = errors.New("the hash tree does not match the root hash")

// ErrDataBlock: data does not match the hash tree (wrapped with the block).
var ErrDataBlock = errors.New("data does not match the hash tree")

// ReadTree reads the tree of sb from a hash device (superblock included).
func ReadTree(sb *Superblock, hashDev io.ReaderAt) (*Tree, error) {
	t := &Tree{sb: sb}
	off := sb.HashOffset()
	lv := sb.levelBlocks()
	t.levels = make([][]byte, len(lv))
	// On the device the top level comes first.
	for i := len(lv) - 1; i >= 0; i-- {
		b := make([]byte, int64(lv[i])*int64(sb.HashBlockSize))
		if _, err := hashDev.ReadAt(b, off); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("hash device truncated: level %d ends at byte %d", i, off+int64(len(b)))
			}
			return nil, fmt.Errorf("read hash tree level %d at byte %d: %w", i, off, err)
		}
		t.levels[i] = b
		off += int64(len(b))
	}
	return t, nil
}

// ParseRootHash reads a root hash as veritysetup prints it: 64 hex digits.
func ParseRootHash(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != digestSize {
		return nil, fmt.Errorf("root hash %q is not %d hex digits", truncate(s, 80), 2*digestSize)
	}
	return b, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (sb *Superblock) digest(block []byte) [digestSize]byte {
	h := sha256.New()
	h.Write(sb.Salt)
	h.Write(block)
	var d [digestSize]byte
	h.Sum(d[:0])
	return d
}

// Root is the root hash the tree hashes to: the digest of its top block.
func (t *Tree) Root() []byte {
	d := t.sb.digest(t.levels[len(t.levels)-1])
	return d[:]
}

// Check verifies the tree itself: every level is the digests of the one below,
// and the top block hashes to root. It reads no data: it is what can be refused
// before an image is written.
func (t *Tree) Check(root []byte) error {
	if !bytes.Equal(t.Root(), root) {
		return fmt.Errorf("%w: the tree's top block hashes to %x, the root hash is %x", ErrRootHash, t.Root(), root)
	}
	bs := int(t.sb.HashBlockSize)
	for i := len(t.levels) - 1; i > 0; i-- {
		upper, lower := t.levels[i], t.levels[i-1]
		for j := 0; j*bs < len(lower); j++ {
			d := t.sb.digest(lower[j*bs : (j+1)*bs])
			if !bytes.Equal(upper[j*digestSize:(j+1)*digestSize], d[:]) {
				return fmt.Errorf("hash tree corrupt: level %d block %d does not match level %d", i-1, j, i)
			}
		}
	}
	return nil
}

// Bytes is the tree as it lies on the hash device after the superblock.
func (t *Tree) Bytes() []byte {
	var b []byte
	for i := len(t.levels) - 1; i >= 0; i-- {
		b = append(b, t.levels[i]...)
	}
	return b
}

// chunkBlocks is how many data blocks CheckData reads at a time.
const chunkBlocks = 1024

// CheckData reads the tree's data (DataSize bytes from data) and compares each
// block's digest with level 0. The first block that differs is the error, with
// its number; a short read is an error naming how far it got.
func (t *Tree) CheckData(data io.ReaderAt) error {
	bs := int64(t.sb.DataBlockSize)
	buf := make([]byte, chunkBlocks*bs)
	level0 := t.levels[0]
	for first := uint64(0); first < t.sb.DataBlocks; first += chunkBlocks {
		n := min(chunkBlocks, t.sb.DataBlocks-first)
		b := buf[:int64(n)*bs]
		if _, err := data.ReadAt(b, int64(first)*bs); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("data truncated: the tree covers %d bytes, the data ends before block %d", t.sb.DataSize(), first+n)
			}
			return fmt.Errorf("read data block %d: %w", first, err)
		}
		for k := uint64(0); k < n; k++ {
			d := t.sb.digest(b[int64(k)*bs : int64(k+1)*bs])
			i := (first + k) * digestSize
			if !bytes.Equal(level0[i:i+digestSize], d[:]) {
				return fmt.Errorf("%w: data block %d (byte %d)", ErrDataBlock, first+k, int64(first+k)*bs)
			}
		}
	}
	return nil
}

// BuildTree computes the tree of DataSize bytes of data, as veritysetup format
// would: what tests and benchmarks compare with, and how an image is made without
// veritysetup.
func BuildTree(sb *Superblock, data io.Reader) (*Tree, error) {
	lv := sb.levelBlocks()
	t := &Tree{sb: sb, levels: make([][]byte, len(lv))}
	for i, n := range lv {
		t.levels[i] = make([]byte, int64(n)*int64(sb.HashBlockSize))
	}
	block := make([]byte, sb.DataBlockSize)
	for i := uint64(0); i < sb.DataBlocks; i++ {
		if _, err := io.ReadFull(data, block); err != nil {
			return nil, fmt.Errorf("read data block %d of %d: %w", i, sb.DataBlocks, err)
		}
		d := sb.digest(block)
		copy(t.levels[0][i*digestSize:], d[:])
	}
	bs := int(sb.HashBlockSize)
	for i := 1; i < len(lv); i++ {
		lower := t.levels[i-1]
		for j := 0; j*bs < len(lower); j++ {
			d := sb.digest(lower[j*bs : (j+1)*bs])
			copy(t.levels[i][j*digestSize:], d[:])
		}
	}
	return t, nil
}

// Marshal encodes sb as veritysetup format writes it.
func (sb *Superblock) Marshal() []byte {
	b := make([]byte, SuperblockSize)
	copy(b, superblockMagic)
	le := putLE{b}
	le.u32(8, sb.Version)
	le.u32(12, sb.HashType)
	copy(b[16:32], sb.UUID[:])
	copy(b[32:64], sb.Algorithm)
	le.u32(64, sb.DataBlockSize)
	le.u32(68, sb.HashBlockSize)
	le.u64(72, sb.DataBlocks)
	le.u16(80, uint16(len(sb.Salt)))
	copy(b[88:], sb.Salt)
	return b
}
