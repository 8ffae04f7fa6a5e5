package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// GPT as the UEFI specification (2.10, chapter 5) defines it: a protective MBR in
// LBA 0, the primary header in LBA 1 followed by the partition entry array, and a
// backup array and header at the end of the disk, each protected by CRC32.

// The layout types and their planning are agentwire's (a Template is checked with
// them when applied); the agent adds the on-disk encoding.
type (
	GUID          = agentwire.GUID
	GPTPartition  = agentwire.GPTPartition
	PartitionSpec = agentwire.PartitionSpec
	// GPTLayout is a whole partition table, with its encoding.
	GPTLayout agentwire.GPTLayout
)

const (
	gptEntries   = agentwire.GPTEntries
	gptEntrySize = agentwire.GPTEntrySize
	gptAlignment = agentwire.GPTAlignment
)

// PlanGPT is agentwire.PlanGPT, as a layout the agent can write.
func PlanGPT(specs []PartitionSpec, diskBytes int64, sectorSize int) (*GPTLayout, error) {
	l, err := agentwire.PlanGPT(specs, diskBytes, sectorSize)
	return (*GPTLayout)(l), err
}

// entries encodes the partition entry array.
func (l *GPTLayout) entries() []byte {
	b := make([]byte, gptEntries*gptEntrySize)
	for i, p := range l.Partitions {
		e := b[i*gptEntrySize:]
		copy(e[0:16], p.Type[:])
		copy(e[16:32], p.GUID[:])
		binary.LittleEndian.PutUint64(e[32:], p.First)
		binary.LittleEndian.PutUint64(e[40:], p.Last)
		binary.LittleEndian.PutUint64(e[48:], p.Attributes)
		for j, u := range utf16.Encode([]rune(p.Name)) {
			if j >= 36 {
				break
			}
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	return b
}

// header encodes a GPT header sector.
func (l *GPTLayout) header(my, alt, entriesLBA uint64, entriesCRC uint32) []byte {
	h := make([]byte, l.SectorSize)
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint32(h[8:], 0x00010000)
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[24:], my)
	binary.LittleEndian.PutUint64(h[32:], alt)
	binary.LittleEndian.PutUint64(h[40:], l.FirstUsable)
	binary.LittleEndian.PutUint64(h[48:], l.LastUsable)
	copy(h[56:72], l.DiskGUID[:])
	binary.LittleEndian.PutUint64(h[72:], entriesLBA)
	binary.LittleEndian.PutUint32(h[80:], gptEntries)
	binary.LittleEndian.PutUint32(h[84:], gptEntrySize)
	binary.LittleEndian.PutUint32(h[88:], entriesCRC)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
	return h
}

// protectiveMBR is LBA 0: one partition of type 0xEE covering the disk (up to
// 2 TiB's worth of sectors), so MBR-only tools see the disk as used.
func (l *GPTLayout) protectiveMBR() []byte {
	m := make([]byte, l.SectorSize)
	p := m[446:]
	p[1], p[2], p[3] = 0x00, 0x02, 0x00 // CHS of LBA 1
	p[4] = 0xEE
	p[5], p[6], p[7] = 0xFF, 0xFF, 0xFF
	binary.LittleEndian.PutUint32(p[8:], 1)
	size := l.Sectors - 1
	if size > 0xFFFFFFFF {
		size = 0xFFFFFFFF
	}
	binary.LittleEndian.PutUint32(p[12:], uint32(size))
	m[510], m[511] = 0x55, 0xAA
	return m
}

// Write writes the table: the first and last MiB are zeroed first (old tables,
// boot code, stale backup headers), then the protective MBR, the backup array and
// header, and last the primary ones, so an interrupted write leaves no valid
// primary header pointing at a half-written array.
func (l *GPTLayout) Write(w io.WriterAt) error {
	ss := uint64(l.SectorSize)
	zero := make([]byte, gptAlignment)
	if _, err := w.WriteAt(zero[:min(uint64(len(zero)), l.firstPartition()*ss)], 0); err != nil {
		return err
	}
	tail := (l.LastUsable + 1) * ss
	if _, err := w.WriteAt(zero[:(l.Sectors*ss)-tail], int64(tail)); err != nil {
		return err
	}
	ent := l.entries()
	crc := crc32.ChecksumIEEE(ent)
	arraySectors := uint64(len(ent)) / ss
	backupArray := l.Sectors - 1 - arraySectors
	writes := []struct {
		lba  uint64
		data []byte
	}{
		{0, l.protectiveMBR()},
		{backupArray, ent},
		{l.Sectors - 1, l.header(l.Sectors-1, 1, backupArray, crc)},
		{2, ent},
		{1, l.header(1, l.Sectors-1, 2, crc)},
	}
	for _, wr := range writes {
		if _, err := w.WriteAt(wr.data, int64(wr.lba*ss)); err != nil {
			return fmt.Errorf("write LBA %d: %w", wr.lba, err)
		}
	}
	return nil
}

// firstPartition is the first LBA any partition uses (the end of the area that
// Write may zero at the start of the disk).
func (l *GPTLayout) firstPartition() uint64 {
	first := l.LastUsable + 1
	for _, p := range l.Partitions {
		first = min(first, p.First)
	}
	return first
}

// ReadGPT reads and checks the primary GPT of a disk of the given size.
func ReadGPT(r io.ReaderAt, diskBytes int64, sectorSize int) (*GPTLayout, error) {
	if sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("sector size %d is not 512 or 4096", sectorSize)
	}
	ss := int64(sectorSize)
	h := make([]byte, ss)
	if _, err := r.ReadAt(h, ss); err != nil {
		return nil, fmt.Errorf("read GPT header: %w", err)
	}
	if !bytes.Equal(h[:8], []byte("EFI PART")) {
		return nil, errors.New("no GPT header (signature)")
	}
	hsize := binary.LittleEndian.Uint32(h[12:])
	if hsize < 92 || int64(hsize) > ss {
		return nil, fmt.Errorf("GPT header size %d", hsize)
	}
	want := binary.LittleEndian.Uint32(h[16:])
	c := append([]byte(nil), h[:hsize]...)
	binary.LittleEndian.PutUint32(c[16:], 0)
	if crc32.ChecksumIEEE(c) != want {
		return nil, errors.New("GPT header CRC mismatch")
	}
	l := &GPTLayout{SectorSize: sectorSize, Sectors: uint64(diskBytes / ss)}
	l.FirstUsable = binary.LittleEndian.Uint64(h[40:])
	l.LastUsable = binary.LittleEndian.Uint64(h[48:])
	copy(l.DiskGUID[:], h[56:72])
	lba := binary.LittleEndian.Uint64(h[72:])
	num := binary.LittleEndian.Uint32(h[80:])
	esz := binary.LittleEndian.Uint32(h[84:])
	if esz < 128 || esz%8 != 0 || esz > 4096 || num > 1024 || uint64(num)*uint64(esz) > 1<<20 {
		return nil, fmt.Errorf("GPT entry array of %d x %d bytes", num, esz)
	}
	if lba > l.Sectors {
		return nil, fmt.Errorf("GPT entry array at LBA %d past the disk", lba)
	}
	ent := make([]byte, int(num)*int(esz))
	if _, err := r.ReadAt(ent, int64(lba)*ss); err != nil {
		return nil, fmt.Errorf("read GPT entries: %w", err)
	}
	if crc32.ChecksumIEEE(ent) != binary.LittleEndian.Uint32(h[88:]) {
		return nil, errors.New("GPT entry array CRC mismatch")
	}
	for i := 0; i < int(num); i++ {
		e := ent[i*int(esz):]
		p := GPTPartition{Number: i + 1}
		copy(p.Type[:], e[0:16])
		if p.Type == (GUID{}) {
			continue
		}
		copy(p.GUID[:], e[16:32])
		p.First = binary.LittleEndian.Uint64(e[32:])
		p.Last = binary.LittleEndian.Uint64(e[40:])
		p.Attributes = binary.LittleEndian.Uint64(e[48:])
		var u []uint16
		for j := 0; j < 36; j++ {
			c := binary.LittleEndian.Uint16(e[56+2*j:])
			if c == 0 {
				break
			}
			u = append(u, c)
		}
		p.Name = string(utf16.Decode(u))
		l.Partitions = append(l.Partitions, p)
	}
	return l, nil
}
