package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func deviceNumber(fi os.FileInfo) (maj, min uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), true
}

// blockDeviceSize is the size of a block device in bytes (BLKGETSIZE64).
func blockDeviceSize(f *os.File) (int64, error) {
	var n uint64
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return 0, fmt.Errorf("BLKGETSIZE64: %w", e)
	}
	return int64(n), nil
}

// logicalSectorSize is the block device's logical sector size (BLKSSZGET).
func logicalSectorSize(f *os.File) (int, error) {
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return 0, fmt.Errorf("BLKSSZGET: %w", err)
	}
	return n, nil
}

// rereadPartitions asks the kernel to re-read the partition table (BLKRRPART), so
// the partitions of a new image or layout appear as devices.
func rereadPartitions(f *os.File) error {
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		return fmt.Errorf("BLKRRPART: %w", err)
	}
	return nil
}

// openExclusive opens a block device for writing with O_EXCL, which the kernel
// refuses (EBUSY) while the device or one of its partitions is mounted or held.
func openExclusive(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("%s is in use (mounted or held by the kernel): %w", path, err)
	}
	return f, err
}

// openExclusiveRW is openExclusive for reading back what was written too.
func openExclusiveRW(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("%s is in use (mounted or held by the kernel): %w", path, err)
	}
	return f, err
}

// dropCache evicts a written and synced range from the page cache, so that
// reading it back reads the device and not the copy in memory.
func dropCache(f *os.File, off, n int64) error {
	return unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}

func mountFS(source, target, fstype string) error {
	return unix.Mount(source, target, fstype, unix.MS_NOATIME, "")
}

func unmountFS(target string) error { return unix.Unmount(target, 0) }

// kernelPower acts through reboot(2). Each syncs first: a write still in the page
// cache would be lost.
type kernelPower struct{}

func (kernelPower) Reboot() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

func (kernelPower) PowerOff() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func (kernelPower) KexecLoad(kernel, initrd *os.File, cmdline string) error {
	fd, flags := -1, 0
	if initrd != nil {
		fd = int(initrd.Fd())
	} else {
		flags |= unix.KEXEC_FILE_NO_INITRAMFS
	}
	err := unix.KexecFileLoad(int(kernel.Fd()), fd, cmdline, flags)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) && os.Geteuid() == 0 {
		// No kexec_file_load in this kernel, or kexec disabled (kexec_load_disabled,
		// lockdown, or a kernel signature policy that refuses this kernel).
		return fmt.Errorf("kexec_file_load: %w (%w)", errors.ErrUnsupported, err)
	}
	return err
}

func (kernelPower) Kexec() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_KEXEC)
}

// killGroupOnCancel runs cmd in its own process group and kills the whole group
// when cmd's context ends.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
