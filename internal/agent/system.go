package agent

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// System is what actions act on. The zero value is the real machine.
type System struct {
	// Root prefixes /sys, /proc and /dev lookups ("" is /): tests point it at a fake tree.
	Root string
	// AllowRegularFiles lets image2disk and partition write to a regular file instead
	// of a whole block device (tests and benchmarks only; no flag or argument sets it).
	AllowRegularFiles bool
	// Power reboots, powers off and kexecs; nil: the kernel's reboot(2).
	Power Power
	// HTTP, if set, makes every download (tests).
	HTTP *http.Client
	// Mount and Unmount mount a filesystem for write-file; nil: mount(2), umount(2).
	Mount   func(source, target, fstype string) error
	Unmount func(target string) error
	// Shell runs exec's command strings; "" is /bin/sh.
	Shell string
}

func (s *System) path(p string) string {
	if s == nil || s.Root == "" || s.Root == "/" {
		return p
	}
	return filepath.Join(s.Root, p)
}

func (s *System) power() Power {
	if s.Power != nil {
		return s.Power
	}
	return kernelPower{}
}

// Power is the machine's power control.
type Power interface {
	Reboot() error
	PowerOff() error
	// KexecLoad loads a kernel (and initrd, if not nil) to boot by Kexec.
	KexecLoad(kernel, initrd *os.File, cmdline string) error
	Kexec() error
}

// target is a disk an action writes to.
type target struct {
	Path  string // as given
	Name  string // kernel name (sda, nvme0n1); "" for a regular file
	Block bool
}

// errNotWholeDisk is the refusal of a target that is not a whole block device.
var errNotWholeDisk = errors.New("not a whole block device")

// checkWholeDisk makes sure path is a whole disk: a block device (symlinks such as
// /dev/disk/by-id/... are followed) whose sysfs entry has no "partition" file, that
// is not read-only, and none of whose partitions is mounted. Writing an image over a
// partition, or over a disk in use, is refused before anything is written.
func (s *System) checkWholeDisk(path string) (*target, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, permanent(fmt.Errorf("disk %s: %w", path, err))
	}
	if fi.Mode().IsRegular() && s.AllowRegularFiles {
		return &target{Path: path}, nil
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return nil, permanent(fmt.Errorf("disk %s: %w (it is a %s)", path, errNotWholeDisk, describeMode(fi.Mode())))
	}
	maj, min, ok := deviceNumber(fi)
	if !ok {
		return nil, permanent(fmt.Errorf("disk %s: cannot read its device number", path))
	}
	link, err := os.Readlink(s.path(fmt.Sprintf("/sys/dev/block/%d:%d", maj, min)))
	if err != nil {
		return nil, permanent(fmt.Errorf("disk %s: device %d:%d is not in /sys/dev/block: %w", path, maj, min, err))
	}
	name := filepath.Base(link)
	sysdir := s.path("/sys/class/block/" + name)
	if _, err := os.Stat(filepath.Join(sysdir, "partition")); err == nil {
		return nil, permanent(fmt.Errorf("disk %s: %w: %s is a partition; give the whole disk", path, errNotWholeDisk, name))
	}
	if b, err := os.ReadFile(filepath.Join(sysdir, "ro")); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil, permanent(fmt.Errorf("disk %s (%s) is read-only", path, name))
	}
	if m := s.mountedOn(name, maj, min); m != "" {
		return nil, permanent(fmt.Errorf("disk %s (%s) is in use: %s", path, name, m))
	}
	return &target{Path: path, Name: name, Block: true}, nil
}

func describeMode(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeSymlink != 0:
		return "symlink"
	}
	return m.Type().String()
}

// mountedOn returns a description of a mount of the disk or any of its partitions,
// "" when none (read from /proc/self/mountinfo's major:minor field).
func (s *System) mountedOn(name string, maj, min uint32) string {
	devs := map[string]bool{fmt.Sprintf("%d:%d", maj, min): true}
	entries, _ := os.ReadDir(s.path("/sys/class/block/" + name))
	for _, e := range entries {
		if b, err := os.ReadFile(s.path("/sys/class/block/" + name + "/" + e.Name() + "/dev")); err == nil {
			if _, err := os.Stat(s.path("/sys/class/block/" + name + "/" + e.Name() + "/partition")); err == nil {
				devs[strings.TrimSpace(string(b))] = true
			}
		}
	}
	f, err := os.Open(s.path("/proc/self/mountinfo"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && devs[fs[2]] {
			return fmt.Sprintf("device %s is mounted on %s", fs[2], fs[4])
		}
	}
	// A swap partition in use is not in mountinfo.
	if b, err := os.ReadFile(s.path("/proc/swaps")); err == nil {
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(filepath.Base(f[0]), name) {
				return "swap is on " + f[0]
			}
		}
	}
	return ""
}

// partitionsByLabel finds block devices by GPT partition name (the PARTNAME the
// kernel puts in each partition's uevent; no udev is needed for it).
func (s *System) partitionsByLabel(label string) ([]string, error) {
	entries, err := os.ReadDir(s.path("/sys/class/block"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		b, err := os.ReadFile(s.path("/sys/class/block/" + e.Name() + "/uevent"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PARTNAME="); ok && v == label {
				out = append(out, "/dev/"+e.Name())
			}
		}
	}
	return out, nil
}

// sysInt reads an integer sysfs attribute.
func sysInt(p string) (int64, bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}
