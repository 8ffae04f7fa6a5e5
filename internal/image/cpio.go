package image

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
)

// The Linux kernel unpacks an initramfs in the "new ASCII" (newc) cpio format,
// magic 070701, without checksums (Documentation/driver-api/early-userspace/
// buffer-format.rst). A header is 110 bytes: the magic and 13 eight-digit hex fields;
// the NUL-terminated name follows, then the data, each padded to 4 bytes.

const (
	cpioMagic      = "070701"
	cpioHeaderSize = 110
	cpioTrailer    = "TRAILER!!!"
	// cpioMaxName bounds names the reader accepts (the kernel's limit is PATH_MAX).
	cpioMaxName = 4096
)

// Unix file type bits as cpio stores them (st_mode).
const (
	sIFMT  = 0o170000
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
	sIFBLK = 0o060000
)

// CPIOHeader describes one cpio entry. Mode carries the Unix type bits (S_IFREG,
// S_IFDIR, ...) and the permission bits, as in stat(2).
type CPIOHeader struct {
	Name         string
	Mode         uint32
	UID, GID     uint32
	Nlink        uint32
	Mtime        int64
	Size         int64
	Ino          uint32
	Major, Minor uint32 // device holding the file; 0 in an initramfs
	RMajor       uint32 // character and block devices
	RMinor       uint32
}

// FileMode converts the Unix mode to an fs.FileMode.
func (h *CPIOHeader) FileMode() fs.FileMode {
	m := fs.FileMode(h.Mode & 0o777)
	if h.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if h.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if h.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch h.Mode & sIFMT {
	case sIFDIR:
		m |= fs.ModeDir
	case sIFLNK:
		m |= fs.ModeSymlink
	case sIFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		m |= fs.ModeDevice
	}
	return m
}

// CPIOWriter writes a newc archive. Like archive/tar: WriteHeader, then exactly
// Size bytes of Write, then the next header; Close writes the trailer.
type CPIOWriter struct {
	w         *bufio.Writer
	off       int64 // bytes written so far, for padding
	remaining int64 // data bytes the current entry still expects
	closed    bool
}

// NewCPIOWriter returns a writer on w.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: bufio.NewWriterSize(w, 1<<16)}
}

func (cw *CPIOWriter) raw(b []byte) error {
	n, err := cw.w.Write(b)
	cw.off += int64(n)
	return err
}

func (cw *CPIOWriter) pad() error {
	if n := (4 - cw.off%4) % 4; n > 0 {
		return cw.raw(make([]byte, n))
	}
	return nil
}

// WriteHeader starts an entry.
func (cw *CPIOWriter) WriteHeader(h *CPIOHeader) error {
	if cw.closed {
		return errors.New("cpio: write after close")
	}
	if cw.remaining != 0 {
		return fmt.Errorf("cpio: previous entry is %d bytes short", cw.remaining)
	}
	if h.Name == "" || len(h.Name) >= cpioMaxName {
		return fmt.Errorf("cpio: entry name %q: empty or too long", h.Name)
	}
	if h.Size < 0 || h.Size > 0xffffffff {
		return fmt.Errorf("cpio: entry %q: size %d does not fit newc's 32 bits", h.Name, h.Size)
	}
	if h.Mtime < 0 || h.Mtime > 0xffffffff {
		return fmt.Errorf("cpio: entry %q: mtime %d does not fit newc's 32 bits", h.Name, h.Mtime)
	}
	var hdr [cpioHeaderSize]byte
	copy(hdr[:], cpioMagic)
	fields := []uint32{h.Ino, h.Mode, h.UID, h.GID, h.Nlink, uint32(h.Mtime), uint32(h.Size),
		h.Major, h.Minor, h.RMajor, h.RMinor, uint32(len(h.Name) + 1), 0}
	for i, v := range fields {
		hex8(hdr[6+8*i:], v)
	}
	if err := cw.raw(hdr[:]); err != nil {
		return err
	}
	if err := cw.raw(append([]byte(h.Name), 0)); err != nil {
		return err
	}
	if err := cw.pad(); err != nil {
		return err
	}
	cw.remaining = h.Size
	return nil
}

// Write writes the current entry's data.
func (cw *CPIOWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > cw.remaining {
		return 0, fmt.Errorf("cpio: %d bytes more than the header's size", int64(len(p))-cw.remaining)
	}
	n, err := cw.w.Write(p)
	cw.off += int64(n)
	cw.remaining -= int64(n)
	if err == nil && cw.remaining == 0 {
		err = cw.pad()
	}
	return n, err
}

// Close writes the trailer entry and flushes; it does not close the underlying writer.
func (cw *CPIOWriter) Close() error {
	if cw.closed {
		return nil
	}
	if err := cw.WriteHeader(&CPIOHeader{Name: cpioTrailer, Nlink: 1}); err != nil {
		return err
	}
	cw.closed = true
	return cw.w.Flush()
}

func hex8(dst []byte, v uint32) {
	const digits = "0123456789abcdef"
	for i := 7; i >= 0; i-- {
		dst[i] = digits[v&0xf]
		v >>= 4
	}
}

// CPIOReader reads a newc archive (for tests and inspection of built images).
type CPIOReader struct {
	r         *bufio.Reader
	off       int64
	remaining int64
	pad       int64
	done      bool
}

// NewCPIOReader returns a reader of r.
func NewCPIOReader(r io.Reader) *CPIOReader { return &CPIOReader{r: bufio.NewReader(r)} }

func (cr *CPIOReader) skip(n int64) error {
	m, err := io.CopyN(io.Discard, cr.r, n)
	cr.off += m
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Next skips the rest of the current entry and returns the next header; io.EOF
// after the trailer.
func (cr *CPIOReader) Next() (*CPIOHeader, error) {
	if cr.done {
		return nil, io.EOF
	}
	if err := cr.skip(cr.remaining + cr.pad); err != nil {
		return nil, err
	}
	cr.remaining, cr.pad = 0, 0
	var hdr [cpioHeaderSize]byte
	n, err := io.ReadFull(cr.r, hdr[:])
	cr.off += int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("cpio: header at %d: %w", cr.off-int64(n), err)
	}
	if string(hdr[:6]) != cpioMagic {
		return nil, fmt.Errorf("cpio: header at %d: magic %q is not newc (%s)", cr.off-int64(n), hdr[:6], cpioMagic)
	}
	var f [13]uint32
	for i := range f {
		v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return nil, fmt.Errorf("cpio: header at %d: field %d: %q is not hex", cr.off-int64(n), i, hdr[6+8*i:14+8*i])
		}
		f[i] = uint32(v)
	}
	namesize := int64(f[11])
	if namesize < 1 || namesize > cpioMaxName {
		return nil, fmt.Errorf("cpio: header at %d: name size %d out of range", cr.off-int64(n), namesize)
	}
	name := make([]byte, namesize)
	m, err := io.ReadFull(cr.r, name)
	cr.off += int64(m)
	if err != nil {
		return nil, fmt.Errorf("cpio: name: %w", io.ErrUnexpectedEOF)
	}
	if name[namesize-1] != 0 {
		return nil, fmt.Errorf("cpio: name %q is not NUL-terminated", name)
	}
	if err := cr.skip((4 - cr.off%4) % 4); err != nil {
		return nil, err
	}
	h := &CPIOHeader{Ino: f[0], Mode: f[1], UID: f[2], GID: f[3], Nlink: f[4], Mtime: int64(f[5]), Size: int64(f[6]),
		Major: f[7], Minor: f[8], RMajor: f[9], RMinor: f[10], Name: string(name[:namesize-1])}
	if h.Name == cpioTrailer {
		cr.done = true
		return nil, io.EOF
	}
	cr.remaining = h.Size
	cr.pad = (4 - (cr.off+h.Size)%4) % 4
	return h, nil
}

// Read reads the current entry's data.
func (cr *CPIOReader) Read(p []byte) (int, error) {
	if cr.remaining == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > cr.remaining {
		p = p[:cr.remaining]
	}
	n, err := cr.r.Read(p)
	cr.off += int64(n)
	cr.remaining -= int64(n)
	if err == io.EOF && cr.remaining > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
