package agent

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"strings"
)

// fsLabel reads the label of the filesystem on a device (or image file) from its
// superblock: ext2/3/4, XFS, FAT12/16/32 and btrfs. It returns the filesystem type
// too; "" and false when none of those is found. Cloud images label their root
// filesystem (Ubuntu's "cloudimg-rootfs", Fedora's "fedora") without naming the
// GPT partition, so write-file finds them by this.
func fsLabel(r io.ReaderAt) (label, fsType string, ok bool) {
	read := func(off int64, n int) []byte {
		b := make([]byte, n)
		if _, err := r.ReadAt(b, off); err != nil {
			return nil
		}
		return b
	}
	// ext2/3/4: superblock at 1024, magic 0xEF53 at 56, volume name at 120 (16 bytes).
	if sb := read(1024, 136); sb != nil && binary.LittleEndian.Uint16(sb[56:]) == 0xEF53 {
		return cString(sb[120:136]), "ext4", true
	}
	if b := read(0, 512); b != nil {
		switch {
		case string(b[0:4]) == "XFSB": // label at 108 (12 bytes)
			return cString(b[108:120]), "xfs", true
		case b[510] == 0x55 && b[511] == 0xAA && string(b[82:87]) == "FAT32": // label at 71
			return fatLabel(b[71:82]), "vfat", true
		case b[510] == 0x55 && b[511] == 0xAA && string(b[54:57]) == "FAT": // FAT12/16: label at 43
			return fatLabel(b[43:54]), "vfat", true
		}
	}
	// btrfs: superblock at 64 KiB, magic "_BHRfS_M" at 0x40, label at 0x12b (256 bytes).
	if sb := read(0x10000, 0x12b+256); sb != nil && string(sb[0x40:0x48]) == "_BHRfS_M" {
		return cString(sb[0x12b:]), "btrfs", true
	}
	return "", "", false
}

// fatLabel trims a FAT volume label; "NO NAME" is FAT's no label.
func fatLabel(b []byte) string {
	l := strings.TrimRight(string(b), " \x00")
	if l == "NO NAME" {
		return ""
	}
	return l
}

// partitionsByFSLabel lists the partitions whose filesystem has label, with the
// filesystem's type.
func (s *System) partitionsByFSLabel(label string) (devs, types []string, err error) {
	entries, err := os.ReadDir(s.path("/sys/class/block"))
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		u, err := os.ReadFile(s.path("/sys/class/block/" + e.Name() + "/uevent"))
		if err != nil || !bytes.Contains(u, []byte("DEVTYPE=partition")) {
			continue
		}
		dev := "/dev/" + e.Name()
		f, err := os.Open(s.path(dev))
		if err != nil {
			continue
		}
		l, t, ok := fsLabel(f)
		f.Close()
		if ok && l == label {
			devs, types = append(devs, dev), append(types, t)
		}
	}
	return devs, types, nil
}

// cString is a NUL-padded field's text.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
