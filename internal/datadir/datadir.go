// Package datadir keeps Kiln's data directory private: every directory 0700 and
// every file 0600, whatever the umask and whoever made the directory. The data
// directory holds the key-encryption key, the database (the sealed CA key,
// secrets' ciphertexts, token hashes, facts) and the admin token; a directory
// created by packaging (0755) or files created under umask 022 (0644) would
// leave them readable by every local user.
package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Modes Kiln keeps in its data directory.
const (
	DirMode  fs.FileMode = 0o700
	FileMode fs.FileMode = 0o600
)

// Secure walks dir and removes group and other permissions from every directory
// (to 0700) and regular file (to 0600) that has any, skipping the subtrees in
// skip (the artifact directory: its files are served to anyone and may belong to
// another user). Symbolic links are not followed. It returns the paths it
// changed, for the caller to log; an error (a mode it cannot change, a file of
// another owner) means the directory is not private and Kiln must not start.
func Secure(dir string, skip ...string) ([]string, error) {
	skipped := make(map[string]bool, len(skip))
	for _, s := range skip {
		if s != "" {
			skipped[filepath.Clean(s)] = true
		}
	}
	var fixed []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if gone(path, dir, err) {
				return nil
			}
			return fmt.Errorf("check mode of %s: %w", path, err)
		}
		if skipped[filepath.Clean(path)] && path != dir {
			return filepath.SkipDir
		}
		var want fs.FileMode
		switch {
		case d.IsDir():
			want = DirMode
		case d.Type().IsRegular():
			want = FileMode
		default:
			return nil // symbolic links, sockets: their own mode means nothing here
		}
		info, err := d.Info()
		if err != nil {
			if gone(path, dir, err) {
				return nil
			}
			return fmt.Errorf("check mode of %s: %w", path, err)
		}
		if info.Mode().Perm()&0o077 == 0 {
			return nil
		}
		if err := os.Chmod(path, info.Mode().Perm()&want); err != nil {
			if gone(path, dir, err) {
				return nil
			}
			return fmt.Errorf("make %s private (mode %o): %w", path, info.Mode().Perm(), err)
		}
		fixed = append(fixed, path)
		return nil
	})
	return fixed, err
}

// gone reports whether err says a path below root vanished between listing its
// directory and looking at it: a temporary file Kiln renamed into place (the
// audit head is written that way while the server starts) exposes nothing any
// more. The root itself missing is an error.
func gone(path, root string, err error) bool {
	return path != root && errors.Is(err, fs.ErrNotExist)
}
