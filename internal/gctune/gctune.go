// Package gctune sets the garbage collector up for a long-running server.
package gctune

import (
	"bufio"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// serverGCPercent is the garbage collector's heap growth for kiln serve: the
// server keeps large indexes in memory (leases, held offers, known MACs) that
// every collection scans, while a boot storm allocates per packet; collecting
// at 5x the live heap instead of 2x halves the CPU a DHCP exchange costs in GC
// (BENCHMARKS.md). A soft memory limit keeps the heap from growing past what
// the machine has.
const serverGCPercent = 400

// Tune applies serverGCPercent unless GOGC is set, and a soft memory limit
// of half the memory available (the machine's, or the cgroup's when smaller)
// unless GOMEMLIMIT is set.
func Tune(log *slog.Logger) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serverGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if total := availableMemory(); total > 0 {
			debug.SetMemoryLimit(total / 2)
			log.Debug("gc tuned", "gcPercent", serverGCPercent, "memoryLimit", total/2)
		}
	}
}

// availableMemory returns the smaller of the machine's memory and the cgroup
// v2 limit, in bytes; 0 when neither can be read.
func availableMemory() int64 {
	var total int64
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(fields[1], 10, 64); err == nil {
					total = kb * 1024
				}
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && v > 0 && (total == 0 || v < total) {
			total = v
		}
	}
	return total
}
