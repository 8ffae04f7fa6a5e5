package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Request is what a Handler learns about a read request.
type Request struct {
	// Filename as the client sent it, unmodified.
	Filename string
	// Mode is "octet" or "netascii" (lower-cased). The server does the netascii
	// conversion; handlers always return the raw content.
	Mode string
	// RemoteAddr is the client's address and port (its transfer ID).
	RemoteAddr netip.AddrPort
	// Options are the options the client requested, names lower-cased, before
	// negotiation. Informational: the server negotiates them itself.
	Options map[string]string
}

// Handler maps a read request to content. It is the seam through which Kiln
// decides what a booting machine gets for a name.
//
// ServeTFTP returns the content and its size in bytes, or -1 if the size is not
// known (then the server does not answer the tsize option). The server reads the
// content sequentially, once, and closes it when the transfer ends.
//
// The error decides the TFTP ERROR packet sent instead: an *Error chooses code
// and message; an error wrapping fs.ErrNotExist sends "file not found" (code 1);
// fs.ErrPermission sends "access violation" (code 2); anything else code 0 with
// a generic message, so that no local path or detail leaks to the client.
type Handler interface {
	ServeTFTP(ctx context.Context, req Request) (content io.ReadCloser, size int64, err error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req Request) (io.ReadCloser, int64, error)

// ServeTFTP calls f.
func (f HandlerFunc) ServeTFTP(ctx context.Context, req Request) (io.ReadCloser, int64, error) {
	return f(ctx, req)
}

// Error is an error that carries the TFTP error code and the message the client
// is sent. Err, if set, is the detail that is logged but not sent.
type Error struct {
	Code    ErrorCode
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Message, e.Err)
	}
	return fmt.Sprintf("tftp error %d: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// toWireError maps a handler error to the code and message sent to the client.
func toWireError(err error) (ErrorCode, string) {
	var te *Error
	switch {
	case errors.As(err, &te):
		return te.Code, te.Message
	case errors.Is(err, fs.ErrNotExist):
		return ErrCodeFileNotFound, "file not found"
	case errors.Is(err, fs.ErrPermission):
		return ErrCodeAccessViolation, "access violation"
	}
	return ErrCodeNotDefined, "internal error"
}

func accessViolation(format string, args ...any) *Error {
	return &Error{Code: ErrCodeAccessViolation, Message: "access violation", Err: fmt.Errorf(format, args...)}
}

// CleanName turns a requested file name into a slash-separated path relative to
// a root, or fails with an access violation *Error.
//
// A leading "/" is stripped, because PXE clients (and DHCP boot-file options)
// commonly ask for "/pxelinux.0" meaning "pxelinux.0 in the TFTP root", as
// tftp-hpa and dnsmasq interpret it. Any ".." component is refused outright,
// even one that would stay inside the root: no legitimate boot loader needs it
// and it is the classic TFTP path traversal.
func CleanName(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	if n == "" {
		return "", accessViolation("empty file name %q", name)
	}
	for _, c := range strings.Split(n, "/") {
		if c == ".." {
			return "", accessViolation("path %q contains a .. component", name)
		}
	}
	n = path.Clean(n)
	if n == "." || !filepath.IsLocal(filepath.FromSlash(n)) {
		return "", accessViolation("path %q does not name a file inside the root", name)
	}
	return n, nil
}

// DirHandler returns a Handler that serves regular files below root.
//
// Requested names go through CleanName and are then opened with os.Root, which
// confines every step of the lookup, symbolic links included, to root: a link
// that resolves outside root (or is absolute) is refused with an access
// violation. Directories and non-regular files (devices, FIFOs, sockets) are
// refused with an access violation, missing files with "file not found".
//
// aliases maps requested names to files. Keys are matched after CleanName (so
// "/ipxe.efi" and "ipxe.efi" are the same key). Alias targets are trusted
// configuration: a relative target is resolved inside root like a request; an
// absolute target names a file anywhere on the host, which lets Kiln serve
// "ipxe.efi" straight from the Debian ipxe package's /usr/lib/ipxe. The map is
// copied.
//
// The root directory is opened on every request, so it may be created or
// replaced while the server runs.
func DirHandler(root string, aliases map[string]string) Handler {
	h := &dirHandler{root: root, aliases: make(map[string]string, len(aliases))}
	for k, v := range aliases {
		if c, err := CleanName(k); err == nil {
			k = c
		}
		h.aliases[k] = v
	}
	return h
}

type dirHandler struct {
	root    string
	aliases map[string]string
}

func (h *dirHandler) ServeTFTP(_ context.Context, req Request) (io.ReadCloser, int64, error) {
	name, err := CleanName(req.Filename)
	if err != nil {
		return nil, 0, err
	}
	var f *os.File
	if target, ok := h.aliases[name]; ok && filepath.IsAbs(target) {
		f, err = os.OpenFile(target, openFlags, 0)
	} else {
		if ok {
			if name, err = CleanName(target); err != nil {
				return nil, 0, fmt.Errorf("alias %q: %w", req.Filename, err)
			}
		}
		f, err = h.openInRoot(name)
	}
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		if fi.IsDir() {
			return nil, 0, accessViolation("%q is a directory", name)
		}
		return nil, 0, accessViolation("%q is not a regular file (%v)", name, fi.Mode().Type())
	}
	return f, fi.Size(), nil
}

func (h *dirHandler) openInRoot(name string) (*os.File, error) {
	r, err := os.OpenRoot(h.root)
	if err != nil {
		return nil, fmt.Errorf("open root: %w", err)
	}
	defer r.Close()
	f, err := r.OpenFile(name, openFlags, 0)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
		// os.Root reports an escaping symlink or path with an unexported error
		// ("path escapes from parent"); everything that is neither missing nor
		// permission-denied is treated as an access violation, never as a
		// generic internal error.
		return nil, accessViolation("open %q in %s: %v", name, h.root, err)
	}
	return f, err
}
