package image

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
)

// Tree is the content of an initramfs: files, directories, symlinks and device
// nodes by path. Written out, entries are sorted by name with inode numbers in that
// order, owner 0:0 and mtime 0, so the same tree always gives the same bytes.
type Tree struct {
	entries map[string]*treeEntry
}

type treeEntry struct {
	mode   uint32 // type and permission bits
	data   []byte // regular file content, when held in memory
	src    string // regular file content, read from this file when written
	size   int64
	target string // symlink
	rmaj   uint32 // device node
	rmin   uint32
}

// NewTree returns an empty tree.
func NewTree() *Tree { return &Tree{entries: map[string]*treeEntry{}} }

func cleanName(name string) (string, error) {
	n := path.Clean("/" + name)[1:]
	if n == "" || n != strings.TrimPrefix(name, "/") {
		return "", fmt.Errorf("initramfs path %q is not clean (no .., //, trailing /)", name)
	}
	return n, nil
}

func (t *Tree) add(name string, e *treeEntry) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if old, ok := t.entries[n]; ok {
		if old.mode&sIFMT == sIFDIR && e.mode&sIFMT == sIFDIR {
			old.mode = e.mode
			return nil
		}
		return fmt.Errorf("initramfs path %q added twice", n)
	}
	for d := path.Dir(n); d != "."; d = path.Dir(d) {
		if p, ok := t.entries[d]; ok {
			if p.mode&sIFMT != sIFDIR {
				return fmt.Errorf("initramfs path %q: parent %q is not a directory", n, d)
			}
			continue
		}
		t.entries[d] = &treeEntry{mode: sIFDIR | 0o755}
	}
	t.entries[n] = e
	return nil
}

// Dir adds a directory (and its parents, 0755).
func (t *Tree) Dir(name string, perm uint32) error {
	return t.add(name, &treeEntry{mode: sIFDIR | perm&0o7777})
}

// File adds a regular file held in memory.
func (t *Tree) File(name string, perm uint32, data []byte) error {
	return t.add(name, &treeEntry{mode: sIFREG | perm&0o7777, data: data, size: int64(len(data))})
}

// FileFrom adds a regular file whose content is read from src when the tree is
// written. Its size is taken now; a file that changes size in between is an error.
func (t *Tree) FileFrom(name string, perm uint32, src string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	return t.add(name, &treeEntry{mode: sIFREG | perm&0o7777, src: src, size: st.Size()})
}

// Symlink adds a symbolic link.
func (t *Tree) Symlink(name, target string) error {
	return t.add(name, &treeEntry{mode: sIFLNK | 0o777, target: target, size: int64(len(target))})
}

// CharDevice adds a character device node (the kernel needs /dev/console before
// devtmpfs is mounted, to give init its stdin, stdout and stderr).
func (t *Tree) CharDevice(name string, perm, major, minor uint32) error {
	return t.add(name, &treeEntry{mode: sIFCHR | perm&0o7777, rmaj: major, rmin: minor})
}

// Names returns the sorted entry names.
func (t *Tree) Names() []string {
	return slices.Sorted(maps.Keys(t.entries))
}

// Size is the sum of the file and symlink contents (progress total).
func (t *Tree) Size() int64 {
	var n int64
	for _, e := range t.entries {
		n += e.size
	}
	return n
}

// WriteCPIO writes the tree as a newc cpio archive (uncompressed). progress, if not
// nil, is called with the content bytes written so far.
func (t *Tree) WriteCPIO(w io.Writer, progress func(done int64)) error {
	cw := NewCPIOWriter(w)
	var done int64
	for i, name := range t.Names() {
		e := t.entries[name]
		h := &CPIOHeader{Name: name, Mode: e.mode, Ino: uint32(i + 1), Nlink: 1, Size: e.size, RMajor: e.rmaj, RMinor: e.rmin}
		if e.mode&sIFMT == sIFDIR {
			h.Nlink = 2
		}
		if err := cw.WriteHeader(h); err != nil {
			return err
		}
		switch {
		case e.mode&sIFMT == sIFLNK:
			if _, err := io.WriteString(cw, e.target); err != nil {
				return err
			}
		case e.src != "":
			if err := copyExactly(cw, e.src, e.size); err != nil {
				return fmt.Errorf("initramfs %s: %w", name, err)
			}
		case e.data != nil:
			if _, err := cw.Write(e.data); err != nil {
				return err
			}
		}
		done += e.size
		if progress != nil {
			progress(done)
		}
	}
	return cw.Close()
}

func copyExactly(w io.Writer, src string, size int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size+1))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%s changed size while building (%d, was %d)", src, n, size)
	}
	return nil
}
