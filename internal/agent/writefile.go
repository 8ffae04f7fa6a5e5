package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"
)

// writeFile writes one file into a filesystem on the target disk, found by its GPT
// partition label. Arguments:
//
//	partitionLabel  GPT partition name (PARTNAME); or
//	fsLabel         the filesystem's label (ext2/3/4, xfs, vfat, btrfs; what cloud
//	                images set, e.g. cloudimg-rootfs); or device, a block device path
//	fsType          ext4, vfat, xfs, btrfs; default: the one fsLabel found, else
//	                tried in that order
//	path            absolute path inside that filesystem; required
//	content         the file's content (the server renders templates in it); or
//	artifactURL     a file to download (the server sets it, and sha256, from
//	                args.artifact); or url
//	sha256          of the download, checked when set
//	mode            octal, default 0644; uid, gid default 0
//
// Parent directories are created (0755). The file is written beside its final
// name, synced and renamed over it, so a crash leaves the old file or the new one,
// never a mix. The path is resolved inside the mounted filesystem: symlinks in it
// cannot lead out of it.
func writeFile(ctx context.Context, env *Env, args Args) error {
	p, err := args.Required("path")
	if err != nil {
		return permanent(err)
	}
	if !strings.HasPrefix(p, "/") || path.Clean(p) == "/" {
		return permanent(fmt.Errorf("args.path: %q is not an absolute file path", p))
	}
	mode, err := args.Mode("mode", 0o644)
	if err != nil {
		return permanent(err)
	}
	uid, err := args.Int("uid", 0)
	if err != nil {
		return permanent(err)
	}
	gid, err := args.Int("gid", 0)
	if err != nil {
		return permanent(err)
	}
	fsType, err := args.String("fsType")
	if err != nil {
		return permanent(err)
	}
	device, err := args.String("device")
	if err != nil {
		return permanent(err)
	}
	label, err := args.String("partitionLabel")
	if err != nil {
		return permanent(err)
	}
	fsLbl, err := args.String("fsLabel")
	if err != nil {
		return permanent(err)
	}
	given := 0
	for _, v := range []string{device, label, fsLbl} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return permanent(errors.New("args: give one of partitionLabel (a GPT partition name), fsLabel (a filesystem label) or device"))
	}
	data, err := fileContent(ctx, env, args)
	if err != nil {
		return err
	}
	switch {
	case label != "":
		if device, err = env.findPartition(ctx, label); err != nil {
			return err
		}
	case fsLbl != "":
		var found string
		if device, found, err = env.findFilesystem(ctx, fsLbl); err != nil {
			return err
		}
		if fsType == "" {
			fsType = found
		}
	}
	dir, err := os.MkdirTemp("", "kiln-mnt-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	used, err := env.mount(device, dir, fsType)
	if err != nil {
		return err
	}
	err = writeIntoRoot(dir, p, data, mode, int(uid), int(gid))
	if uerr := env.unmount(dir); uerr != nil && err == nil {
		err = fmt.Errorf("unmount %s: %w", device, uerr)
	}
	if err != nil {
		return fmt.Errorf("write %s on %s: %w", p, device, err)
	}
	env.Logf("wrote %s (%d bytes, mode %04o, owner %d:%d) on %s (%s)", p, len(data), mode, uid, gid, device, used)
	env.SetMessage("wrote %s on %s", p, device)
	return nil
}

// maxFileContent bounds a file write-file downloads: it is held in memory (the
// agent environment has no disk of its own).
const maxFileContent = 256 << 20

func fileContent(ctx context.Context, env *Env, args Args) ([]byte, error) {
	content, err := args.String("content")
	if err != nil {
		return nil, permanent(err)
	}
	src, err := firstString(args, "artifactURL", "url")
	if err != nil {
		return nil, permanent(err)
	}
	switch {
	case args.Has("content") && src != "":
		return nil, permanent(errors.New("args: give content or an artifact, not both"))
	case src == "":
		if !args.Has("content") {
			return nil, permanent(errors.New("args.content: required (or args.artifact)"))
		}
		return []byte(content), nil
	}
	want, err := args.String("sha256")
	if err != nil {
		return nil, permanent(err)
	}
	want = strings.ToLower(want)
	resp, err := env.Get(ctx, src)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxFileContent+1))
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", redactURL(src), err)
	}
	if len(data) > maxFileContent {
		return nil, permanent(fmt.Errorf("%s is larger than %d bytes; use image2disk for large content", redactURL(src), maxFileContent))
	}
	if want != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want {
			return nil, fmt.Errorf("sha256 mismatch: %s is %s, expected %s", redactURL(src), got, want)
		}
	}
	return data, nil
}

// findPartition finds the one partition with a GPT label. Partition devices appear
// asynchronously after a new table is read, so it waits a few seconds for one.
func (s *System) findPartition(ctx context.Context, label string) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		devs, err := s.partitionsByLabel(label)
		if err != nil {
			return "", fmt.Errorf("list block devices: %w", err)
		}
		switch {
		case len(devs) == 1:
			return devs[0], nil
		case len(devs) > 1:
			return "", permanent(fmt.Errorf("partition label %q is on %s: give args.device", label, strings.Join(devs, " and ")))
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no partition labelled %q (GPT partition name)", label)
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return "", err
		}
	}
}

// findFilesystem waits (10 s) for the one partition whose filesystem is labelled
// label, and returns it with the filesystem's type.
func (s *System) findFilesystem(ctx context.Context, label string) (string, string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		devs, types, err := s.partitionsByFSLabel(label)
		if err != nil {
			return "", "", fmt.Errorf("list block devices: %w", err)
		}
		switch {
		case len(devs) == 1:
			return devs[0], types[0], nil
		case len(devs) > 1:
			return "", "", permanent(fmt.Errorf("filesystem label %q is on %s: give args.device", label, strings.Join(devs, " and ")))
		}
		if time.Now().After(deadline) {
			return "", "", fmt.Errorf("no filesystem labelled %q on any partition", label)
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return "", "", err
		}
	}
}

var fsTypes = []string{"ext4", "vfat", "xfs", "btrfs"}

func (s *System) mount(device, dir, fsType string) (string, error) {
	mount := s.Mount
	if mount == nil {
		mount = mountFS
	}
	types := fsTypes
	if fsType != "" {
		types = []string{fsType}
	}
	var errs []string
	for _, t := range types {
		err := mount(device, dir, t)
		if err == nil {
			return t, nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", t, err))
	}
	return "", fmt.Errorf("mount %s: %s", device, strings.Join(errs, "; "))
}

func (s *System) unmount(dir string) error {
	if s.Unmount != nil {
		return s.Unmount(dir)
	}
	return unmountFS(dir)
}

// writeIntoRoot writes name (absolute, inside root) atomically with os.Root, which
// resolves every path component inside root.
func writeIntoRoot(root, name string, data []byte, mode uint32, uid, gid int) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer r.Close()
	rel := strings.TrimPrefix(path.Clean(name), "/")
	if d := path.Dir(rel); d != "." {
		if err := r.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", path.Dir(name), err)
		}
	}
	tmp := path.Join(path.Dir(rel), fmt.Sprintf(".%s.kiln-%d", path.Base(rel), time.Now().UnixNano()))
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(mode)&os.ModePerm)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			r.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	// Set after creation: the umask must not narrow the mode asked for; setuid and
	// friends need an explicit chmod anyway.
	if err := f.Chown(uid, gid); err != nil {
		return fmt.Errorf("chown %d:%d: %w", uid, gid, err)
	}
	if err := f.Chmod(fileMode(mode)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := r.Rename(tmp, rel); err != nil {
		return err
	}
	ok = true
	if d, err := r.Open(path.Dir(rel)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// fileMode converts Unix permission bits (with setuid, setgid, sticky) to os.FileMode.
func fileMode(m uint32) os.FileMode {
	fm := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}
