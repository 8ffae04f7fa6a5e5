package agent

import "github.com/kilnhq/kiln/internal/agentwire"

// disk returns the action's target disk: the "disk" argument when it is a path,
// the disk its selector picks otherwise.
func (s *System) disk(args Args) (string, error) {
	if v, isMap := args["disk"].(map[string]any); isMap {
		sel, err := agentwire.ParseDiskSelector(v)
		if err != nil {
			return "", permanent(err)
		}
		d, err := selectDisk(sel, blockDisks(s))
		if err != nil {
			return "", err
		}
		return d.Path, nil
	}
	p, err := args.Required("disk")
	if err != nil {
		return "", permanent(err)
	}
	return p, nil
}

// selectDisk is sel.Select, whose refusal no retry can change.
func selectDisk(sel *agentwire.DiskSelector, disks []Disk) (Disk, error) {
	d, err := sel.Select(disks)
	if err != nil {
		return Disk{}, permanent(err)
	}
	return d, nil
}
