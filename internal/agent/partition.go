package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// partition writes a GPT to a whole disk. Arguments:
//
//	disk        whole block device, or a DiskSelector ({type: ssd, pick: largest}); required
//	partitions  list of {label, size, type, guid}: sizes like 512MiB or 20G, one
//	            may be "rest"; types linux (default), esp, swap, bios, lvm, raid, ...
//	            or a type GUID
//
// Layouts that cannot fit are refused before anything is written. The kernel is
// asked to re-read the table (BLKRRPART, else partx -u), so the partitions can be
// formatted and written to by the next actions.
func partition(ctx context.Context, env *Env, args Args) error {
	disk, err := env.disk(args)
	if err != nil {
		return err
	}
	var specs []PartitionSpec
	if !args.Has("partitions") {
		return permanent(errors.New("args.partitions: required (a list of {label, size, type})"))
	}
	if err := args.Decode("partitions", &specs); err != nil {
		return permanent(err)
	}
	tgt, err := env.checkWholeDisk(disk)
	if err != nil {
		return err
	}
	var f *os.File
	size, sectorSize := int64(0), 512
	if tgt.Block {
		if f, err = openExclusive(disk); err != nil {
			return fmt.Errorf("open %s: %w", disk, err)
		}
		defer f.Close()
		if size, err = blockDeviceSize(f); err != nil {
			return err
		}
		if sectorSize, err = logicalSectorSize(f); err != nil {
			return err
		}
	} else {
		if f, err = os.OpenFile(disk, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("open %s: %w", disk, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		size = st.Size()
	}
	layout, err := PlanGPT(specs, size, sectorSize)
	if err != nil {
		return permanent(fmt.Errorf("args.%w", err))
	}
	if err := layout.Write(f); err != nil {
		return fmt.Errorf("write GPT to %s: %w", disk, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", disk, err)
	}
	ss := uint64(sectorSize)
	var summary []string
	for i, p := range layout.Partitions {
		bytes := int64((p.Last - p.First + 1) * ss)
		env.Logf("partition %d %q: %s at %s, type %s", i+1, p.Name, agentwire.SizeText(bytes), agentwire.SizeText(int64(p.First*ss)), p.Type)
		summary = append(summary, fmt.Sprintf("%s %s", p.Name, agentwire.SizeText(bytes)))
	}
	if tgt.Block {
		if err := rereadPartitions(f); err != nil {
			// BLKRRPART fails with EBUSY when any partition is open; partx updates
			// the partitions one by one instead.
			out, perr := exec.CommandContext(ctx, "partx", "-u", disk).CombinedOutput()
			if perr != nil {
				return fmt.Errorf("the kernel did not take the new table: %v; partx -u: %v %s", err, perr, strings.TrimSpace(string(out)))
			}
		}
	}
	env.SetMessage("GPT on %s: %s", disk, strings.Join(summary, ", "))
	return nil
}
