//go:build unix

package tftp

import (
	"os"
	"syscall"
)

// openFlags opens served files non-blocking, so that a FIFO planted in the root
// cannot block a transfer goroutine in open(2) before the regular-file check
// rejects it. O_NONBLOCK has no effect on reads of regular files.
const openFlags = os.O_RDONLY | syscall.O_NONBLOCK
