// Package verity reads and checks dm-verity images as `veritysetup format` writes
// them: the superblock, the SHA-256 hash tree, the root hash, and the PKCS#7
// signature of the root hash that the kernel's dm-verity checks
// (root_hash_sig_key_desc) and systemd calls roothash.p7s. It imports nothing of
// Kiln: the agent checks an image it wrote with it, the server a signature before
// it starts an upgrade.
package verity

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// SuperblockSize is the on-disk size of the superblock (cryptsetup's
// lib/verity/verity.c, struct verity_sb).
const SuperblockSize = 512

var superblockMagic = []byte("verity\x00\x00")

// Superblock is the header veritysetup format writes at the start of the hash
// device: it says how the data was hashed. The root hash is not in it: it comes
// from whoever signed the image.
type Superblock struct {
	Version       uint32 // 1
	HashType      uint32 // 1: the salt is hashed before each block (0 is Chrome OS's, after)
	UUID          [16]byte
	Algorithm     string // sha256 (the only one Kiln checks)
	DataBlockSize uint32
	HashBlockSize uint32
	DataBlocks    uint64
	Salt          []byte
}

// ParseSuperblock reads and validates a superblock (the first 512 bytes of a
// hash device). Anything Kiln cannot check the same way the kernel would (another
// hash type or algorithm, block sizes that are not powers of two from 512 to
// 64 KiB, no data, a salt beyond 256 bytes) is an error naming the field.
func ParseSuperblock(b []byte) (*Superblock, error) {
	if len(b) < SuperblockSize {
		return nil, fmt.Errorf("verity superblock: %d bytes, want %d", len(b), SuperblockSize)
	}
	if !bytes.Equal(b[:8], superblockMagic) {
		return nil, errors.New("verity superblock: no \"verity\" signature (is this the hash device veritysetup format wrote?)")
	}
	le := binary.LittleEndian
	sb := &Superblock{
		Version:       le.Uint32(b[8:]),
		HashType:      le.Uint32(b[12:]),
		DataBlockSize: le.Uint32(b[64:]),
		HashBlockSize: le.Uint32(b[68:]),
		DataBlocks:    le.Uint64(b[72:]),
	}
	copy(sb.UUID[:], b[16:32])
	alg := b[32:64]
	if i := bytes.IndexByte(alg, 0); i >= 0 {
		alg = alg[:i]
	}
	sb.Algorithm = string(alg)
	saltSize := int(le.Uint16(b[80:]))
	switch {
	case sb.Version != 1:
		return nil, fmt.Errorf("verity superblock: version %d, want 1", sb.Version)
	case sb.HashType != 1:
		return nil, fmt.Errorf("verity superblock: hash type %d, want 1 (normal; 0 is Chrome OS's format)", sb.HashType)
	case sb.Algorithm != "sha256":
		return nil, fmt.Errorf("verity superblock: hash algorithm %q, want sha256", sb.Algorithm)
	case !validBlockSize(sb.DataBlockSize):
		return nil, fmt.Errorf("verity superblock: data block size %d is not a power of two from 512 to 65536", sb.DataBlockSize)
	case !validBlockSize(sb.HashBlockSize):
		return nil, fmt.Errorf("verity superblock: hash block size %d is not a power of two from 512 to 65536", sb.HashBlockSize)
	case sb.DataBlocks < 2:
		// One block has no tree at all (the root hash is the block's digest): no
		// image worth a slot is that small, and Kiln does not special-case it.
		return nil, fmt.Errorf("verity superblock: %d data blocks, at least 2", sb.DataBlocks)
	case sb.DataBlocks > uint64(1<<50)/uint64(sb.DataBlockSize):
		return nil, fmt.Errorf("verity superblock: %d data blocks is more than 1 PiB", sb.DataBlocks)
	case saltSize > 256:
		return nil, fmt.Errorf("verity superblock: salt size %d, at most 256", saltSize)
	}
	sb.Salt = bytes.Clone(b[88 : 88+saltSize])
	return sb, nil
}

func validBlockSize(n uint32) bool {
	return n >= 512 && n <= 65536 && n&(n-1) == 0
}

// DataSize is the number of bytes of data the tree covers.
func (sb *Superblock) DataSize() int64 {
	return int64(sb.DataBlocks) * int64(sb.DataBlockSize)
}

// HashOffset is where the tree starts on the hash device: after the superblock,
// on the next hash block boundary (cryptsetup's VERITY_create).
func (sb *Superblock) HashOffset() int64 {
	bs := int64(sb.HashBlockSize)
	return (SuperblockSize + bs - 1) / bs * bs
}

// digestSize is SHA-256's; each entry of a hash block takes a power of two of
// bytes, which 32 already is.
const digestSize = 32

// levelBlocks is the number of hash blocks of each level, level 0 (hashing the
// data blocks) first: the kernel's dm-verity computes the same (verity_ctr).
func (sb *Superblock) levelBlocks() []uint64 {
	perBlock := uint64(sb.HashBlockSize) / digestSize
	var levels []uint64
	n := sb.DataBlocks
	for n > 1 {
		n = (n + perBlock - 1) / perBlock
		levels = append(levels, n)
	}
	return levels
}

// TreeSize is the number of bytes of the hash tree, without the superblock.
func (sb *Superblock) TreeSize() int64 {
	var n uint64
	for _, b := range sb.levelBlocks() {
		n += b
	}
	return int64(n) * int64(sb.HashBlockSize)
}

// HashDeviceSize is the size of what veritysetup format writes to the hash
// device: superblock, padding, tree.
func (sb *Superblock) HashDeviceSize() int64 {
	return sb.HashOffset() + sb.TreeSize()
}

type putLE struct{ b []byte }

func (p putLE) u16(off int, v uint16) { binary.LittleEndian.PutUint16(p.b[off:], v) }
func (p putLE) u32(off int, v uint32) { binary.LittleEndian.PutUint32(p.b[off:], v) }
func (p putLE) u64(off int, v uint64) { binary.LittleEndian.PutUint64(p.b[off:], v) }
