package tftp

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestCleanName(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"pxelinux.0", "pxelinux.0", true},
		{"/pxelinux.0", "pxelinux.0", true},
		{"//pxelinux.0", "pxelinux.0", true},
		{"boot/grub/x86_64-efi/core.efi", "boot/grub/x86_64-efi/core.efi", true},
		{"boot//./grub/", "boot/grub", true},
		{"pxelinux.cfg/01-52-54-00-12-34-56", "pxelinux.cfg/01-52-54-00-12-34-56", true},
		{"..", "", false},
		{"../etc/passwd", "", false},
		{"/../etc/passwd", "", false},
		{"a/../../etc/passwd", "", false},
		{"a/../b", "", false}, // stays inside, but .. is refused outright
		{"a/..", "", false},
		{"", "", false},
		{"/", "", false},
		{".", "", false},
		{"./", "", false},
		{"..foo", "..foo", true}, // a name, not a component
	}
	for _, tt := range tests {
		got, err := CleanName(tt.in)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("CleanName(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil {
			if code, _ := toWireError(err); code != ErrCodeAccessViolation {
				t.Errorf("CleanName(%q) error maps to code %d", tt.in, code)
			}
		}
	}
}

// makeTree builds a TFTP root and a secret file next to it (outside the root).
func makeTree(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "root")
	outside = filepath.Join(base, "secret")
	must(t, os.MkdirAll(filepath.Join(root, "sub", "dir"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "pxelinux.0"), []byte("loader"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "sub", "file"), []byte("nested"), 0o644))
	must(t, os.WriteFile(outside, []byte("secret"), 0o644))
	must(t, os.Symlink("pxelinux.0", filepath.Join(root, "link-inside")))
	must(t, os.Symlink("../pxelinux.0", filepath.Join(root, "sub", "link-up-inside")))
	must(t, os.Symlink("../secret", filepath.Join(root, "link-escape")))
	must(t, os.Symlink(outside, filepath.Join(root, "link-absolute")))
	must(t, os.Symlink(filepath.Dir(outside), filepath.Join(root, "dirlink-escape")))
	must(t, os.Symlink("missing", filepath.Join(root, "dangling")))
	return root, outside
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestDirHandler(t *testing.T) {
	root, outside := makeTree(t)
	h := DirHandler(root, map[string]string{
		"ipxe.efi":        "sub/file",
		"/undionly.kpxe":  outside, // absolute: trusted configuration, served as is
		"bad-alias":       "../secret",
		"missing-alias":   "nope",
		"snponly.efi":     "/definitely/not/there",
		"sub/alias-chain": "ipxe.efi", // targets are files, not other aliases
	})
	tests := []struct {
		name string
		want string    // content, if ok
		code ErrorCode // else the wire error code
	}{
		{name: "pxelinux.0", want: "loader"},
		{name: "/pxelinux.0", want: "loader"},
		{name: "sub/file", want: "nested"},
		{name: "/sub//file", want: "nested"},
		{name: "link-inside", want: "loader"},
		{name: "sub/link-up-inside", want: "loader"},
		{name: "ipxe.efi", want: "nested"},
		{name: "/ipxe.efi", want: "nested"},
		{name: "undionly.kpxe", want: "secret"},
		{name: "missing", code: ErrCodeFileNotFound},
		{name: "sub/missing", code: ErrCodeFileNotFound},
		{name: "dangling", code: ErrCodeFileNotFound},
		{name: "missing-alias", code: ErrCodeFileNotFound},
		{name: "snponly.efi", code: ErrCodeFileNotFound},
		{name: "sub/alias-chain", code: ErrCodeFileNotFound},
		{name: "../secret", code: ErrCodeAccessViolation},
		{name: "/../secret", code: ErrCodeAccessViolation},
		{name: "sub/../../secret", code: ErrCodeAccessViolation},
		{name: "link-escape", code: ErrCodeAccessViolation},
		{name: "link-absolute", code: ErrCodeAccessViolation},
		{name: "dirlink-escape/secret", code: ErrCodeAccessViolation},
		{name: "bad-alias", code: ErrCodeAccessViolation},
		{name: "sub", code: ErrCodeAccessViolation},
		{name: "sub/dir/", code: ErrCodeAccessViolation},
		{name: "/", code: ErrCodeAccessViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, size, err := h.ServeTFTP(context.Background(), Request{Filename: tt.name, Mode: "octet"})
			if tt.want != "" {
				if err != nil {
					t.Fatalf("ServeTFTP(%q): %v", tt.name, err)
				}
				defer rc.Close()
				b, err := io.ReadAll(rc)
				if err != nil || string(b) != tt.want || size != int64(len(tt.want)) {
					t.Errorf("ServeTFTP(%q) = %q size %d, %v; want %q", tt.name, b, size, err, tt.want)
				}
				return
			}
			if err == nil {
				rc.Close()
				t.Fatalf("ServeTFTP(%q) succeeded, want error code %d", tt.name, tt.code)
			}
			if code, _ := toWireError(err); code != tt.code {
				t.Errorf("ServeTFTP(%q) error %v maps to code %d, want %d", tt.name, err, code, tt.code)
			}
		})
	}
}

func TestDirHandlerMissingRoot(t *testing.T) {
	h := DirHandler(filepath.Join(t.TempDir(), "nope"), nil)
	_, _, err := h.ServeTFTP(context.Background(), Request{Filename: "x"})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing root: %v", err)
	}
}

func TestToWireError(t *testing.T) {
	tests := []struct {
		err  error
		code ErrorCode
		msg  string
	}{
		{fs.ErrNotExist, ErrCodeFileNotFound, "file not found"},
		{&fs.PathError{Op: "open", Path: "/srv/x", Err: fs.ErrPermission}, ErrCodeAccessViolation, "access violation"},
		{&Error{Code: ErrCodeDiskFull, Message: "custom"}, ErrCodeDiskFull, "custom"},
		{errors.New("/secret/path: boom"), ErrCodeNotDefined, "internal error"},
	}
	for _, tt := range tests {
		code, msg := toWireError(tt.err)
		if code != tt.code || msg != tt.msg {
			t.Errorf("toWireError(%v) = %d %q", tt.err, code, msg)
		}
	}
}
