//go:build !linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// The agent runs on Linux; elsewhere the package builds (the kiln CLI is one
// binary) and these say so.

var errNotLinux = fmt.Errorf("the agent needs Linux: %w", errors.ErrUnsupported)

func deviceNumber(os.FileInfo) (uint32, uint32, bool) { return 0, 0, false }
func blockDeviceSize(*os.File) (int64, error)         { return 0, errNotLinux }
func logicalSectorSize(*os.File) (int, error)         { return 0, errNotLinux }
func rereadPartitions(*os.File) error                 { return errNotLinux }
func openExclusive(path string) (*os.File, error)     { return nil, errNotLinux }
func openExclusiveRW(path string) (*os.File, error)   { return nil, errNotLinux }
func dropCache(f *os.File, off, n int64) error        { return errNotLinux }
func mountFS(source, target, fstype string) error     { return errNotLinux }
func unmountFS(target string) error                   { return errNotLinux }

type kernelPower struct{}

func (kernelPower) Reboot() error                                           { return errNotLinux }
func (kernelPower) PowerOff() error                                         { return errNotLinux }
func (kernelPower) KexecLoad(kernel, initrd *os.File, cmdline string) error { return errNotLinux }
func (kernelPower) Kexec() error                                            { return errNotLinux }

func killGroupOnCancel(cmd *exec.Cmd) {}
