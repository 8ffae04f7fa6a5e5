package agentwire

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
)

// A partition action's layout, planned the same way when a Template is applied (to
// refuse what can never be written) and on the machine (against its real disk). The
// agent writes the planned GPTLayout to disk.

// GUID is a GPT GUID in its on-disk byte order (the first three fields
// little-endian, the rest as written).
type GUID [16]byte

// ParseGUID reads the text form, 0FC63DAF-8483-4772-8E79-3D69D8477DE4.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	h := strings.ReplaceAll(s, "-", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 || len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("%q is not a GUID like 0FC63DAF-8483-4772-8E79-3D69D8477DE4", s)
	}
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g, nil
}

func (g GUID) String() string {
	return fmt.Sprintf("%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%X",
		g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10:])
}

func randomGUID() GUID {
	var g GUID
	rand.Read(g[:])
	g[7] = g[7]&0x0f | 0x40 // version 4 (byte 7 holds the high byte of field 3)
	g[8] = g[8]&0x3f | 0x80 // RFC 4122 variant
	return g
}

// PartitionTypes are the type aliases partition accepts (else a GUID).
var PartitionTypes = map[string]string{
	"linux":       "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
	"esp":         "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
	"efi":         "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
	"swap":        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
	"bios":        "21686148-6449-6E6F-744E-656564454649",
	"bios-boot":   "21686148-6449-6E6F-744E-656564454649",
	"lvm":         "E6D6D379-F507-44C2-A23C-238F2A3DF928",
	"raid":        "A19D880F-05FC-4D3B-A006-743F0F84911E",
	"home":        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
	"root-x86-64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
	"root-arm64":  "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
	"xbootldr":    "BC13C2FF-59E6-4262-A352-B275FD6F7172",
	"windows":     "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
}

// PartitionSpec is one partition as an action asks for it.
type PartitionSpec struct {
	Label string `json:"label"`
	// Size: 512MiB, 20GiB, 1.5T (K, M, G, T are powers of 1024; KB, MB, GB, TB of
	// 1000), a number of bytes, or "rest" (also "*", "100%" or empty) for the
	// remaining space; at most one partition takes the rest.
	Size string `json:"size"`
	// Type: an alias of PartitionTypes (default linux) or a type GUID.
	Type string `json:"type"`
	// GUID is the partition's unique GUID; empty: random.
	GUID string `json:"guid"`
}

// GPTPartition is one entry of a layout.
type GPTPartition struct {
	Name       string
	Type       GUID
	GUID       GUID
	First      uint64 // LBA
	Last       uint64 // LBA, inclusive
	Attributes uint64
	// Number is the entry's place in the table, from 1 (sda3 is number 3); set by
	// the agent's ReadGPT.
	Number int
}

// GPTLayout is a whole partition table.
type GPTLayout struct {
	SectorSize  int
	Sectors     uint64 // of the disk
	DiskGUID    GUID
	FirstUsable uint64
	LastUsable  uint64
	Partitions  []GPTPartition
}

// The GPT on-disk format Kiln writes: 128 entries of 128 bytes.
const (
	GPTEntries   = 128
	GPTEntrySize = 128
	GPTAlignment = 1 << 20 // partitions start on 1 MiB boundaries (4K and RAID stripes)
)

// ParseSize reads a partition size; rest is true for the remaining space.
func ParseSize(s string) (bytes uint64, rest bool, err error) {
	t := strings.TrimSpace(s)
	switch strings.ToLower(t) {
	case "", "rest", "*", "100%", "-":
		return 0, true, nil
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 {
		return 0, false, fmt.Errorf("size %q: not a positive size like 512MiB or 20G", s)
	}
	mult := map[string]float64{"": 1, "B": 1, "S": 512,
		"K": 1 << 10, "KI": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MI": 1 << 20, "MIB": 1 << 20,
		"G": 1 << 30, "GI": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TI": 1 << 40, "TIB": 1 << 40,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
	m, ok := mult[unit]
	if !ok {
		return 0, false, fmt.Errorf("size %q: unknown unit %q (use K, M, G, T, KiB.., KB..)", s, t[i:])
	}
	v := f * m
	if v > 1<<62 {
		return 0, false, fmt.Errorf("size %q: too large", s)
	}
	return uint64(v), false, nil
}

// PlanGPT lays out partitions, in order, on a disk of diskBytes: each starts on a
// 1 MiB boundary; sizes round up to whole sectors. Layouts that cannot fit, have two
// "rest" partitions, more than 128 entries, duplicate labels or labels longer than 36
// UTF-16 units are errors.
func PlanGPT(specs []PartitionSpec, diskBytes int64, sectorSize int) (*GPTLayout, error) {
	if sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("sector size %d is not 512 or 4096", sectorSize)
	}
	if len(specs) == 0 {
		return nil, errors.New("no partitions given")
	}
	if len(specs) > GPTEntries {
		return nil, fmt.Errorf("%d partitions: GPT holds at most %d", len(specs), GPTEntries)
	}
	ss := uint64(sectorSize)
	n := uint64(diskBytes) / ss
	arraySectors := uint64(GPTEntries*GPTEntrySize) / ss
	align := uint64(GPTAlignment) / ss
	l := &GPTLayout{SectorSize: sectorSize, Sectors: n, DiskGUID: randomGUID()}
	if n < 2*(2+arraySectors)+align {
		return nil, fmt.Errorf("disk of %d bytes is too small for a GPT", diskBytes)
	}
	l.FirstUsable = 2 + arraySectors
	l.LastUsable = n - 2 - arraySectors
	alignUp := func(x uint64) uint64 { return (x + align - 1) / align * align }

	type planned struct {
		sectors uint64
		rest    bool
	}
	plans := make([]planned, len(specs))
	labels := map[string]int{}
	restIdx := -1
	for i, s := range specs {
		path := fmt.Sprintf("partitions[%d]", i)
		if s.Label == "" {
			return nil, fmt.Errorf("%s.label: required (write-file finds partitions by label)", path)
		}
		if len(utf16.Encode([]rune(s.Label))) > 36 {
			return nil, fmt.Errorf("%s.label: %q is longer than GPT's 36 UTF-16 units", path, s.Label)
		}
		if j, dup := labels[s.Label]; dup {
			return nil, fmt.Errorf("%s.label: %q is also partitions[%d]'s", path, s.Label, j)
		}
		labels[s.Label] = i
		b, rest, err := ParseSize(s.Size)
		if err != nil {
			return nil, fmt.Errorf("%s.%w", path, err)
		}
		if rest {
			if restIdx >= 0 {
				return nil, fmt.Errorf("%s.size: only one partition can take the rest (partitions[%d] does)", path, restIdx)
			}
			restIdx = i
		}
		plans[i] = planned{sectors: (b + ss - 1) / ss, rest: rest}
	}
	// Sizes of everything but the rest, with alignment gaps, decide the rest's share.
	need := uint64(0)
	pos := l.FirstUsable
	for _, p := range plans {
		start := alignUp(pos)
		if p.rest {
			pos = start + 1 // at least one sector, for now
			continue
		}
		pos = start + p.sectors
	}
	need = pos
	if need-1 > l.LastUsable {
		return nil, fmt.Errorf("partitions need %s but the disk has %s usable", SizeText(int64(need*ss)), SizeText(int64((l.LastUsable+1)*ss)))
	}
	spare := l.LastUsable + 1 - need
	pos = l.FirstUsable
	for i, s := range specs {
		p := plans[i]
		start := alignUp(pos)
		sectors := p.sectors
		if p.rest {
			sectors = 1 + spare
			if i < len(specs)-1 {
				// Leave the following partitions their alignment: round the rest down
				// to a boundary.
				end := (start + sectors) / align * align
				if end > start {
					sectors = end - start
				}
			}
		}
		typ := cmp.Or(s.Type, "linux")
		if alias, ok := PartitionTypes[strings.ToLower(typ)]; ok {
			typ = alias
		}
		tg, err := ParseGUID(typ)
		if err != nil {
			return nil, fmt.Errorf("partitions[%d].type: %q is not one of %s, nor a GUID", i, s.Type, typeAliases())
		}
		ug := randomGUID()
		if s.GUID != "" {
			if ug, err = ParseGUID(s.GUID); err != nil {
				return nil, fmt.Errorf("partitions[%d].guid: %w", i, err)
			}
		}
		part := GPTPartition{Name: s.Label, Type: tg, GUID: ug, First: start, Last: start + sectors - 1}
		if part.Last > l.LastUsable {
			return nil, fmt.Errorf("partitions[%d] (%s) ends past the disk's last usable sector", i, s.Label)
		}
		l.Partitions = append(l.Partitions, part)
		pos = part.Last + 1
	}
	return l, nil
}

func typeAliases() string {
	return strings.Join(slices.Sorted(maps.Keys(PartitionTypes)), ", ")
}

// SizeText is a size as Kiln's messages show it, on the agent and in the rules
// here: bytes, MiB or GiB.
func SizeText(n int64) string {
	switch {
	case n < 0:
		return "size unknown"
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}
