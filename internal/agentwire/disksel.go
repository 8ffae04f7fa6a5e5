package agentwire

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// DiskSelector picks the target disk by what the machine has, for fleets whose
// disks are not named alike (/dev/sda here, /dev/nvme0n1 there). It is the value
// of an action's "disk" argument instead of a device path:
//
//	disk: {type: ssd, minSize: 200G, pick: smallest}
//
// The candidates are the whole disks facts report (not loop, ram, optical or, by
// default, removable devices); the filters keep those that match all of them, and
// pick chooses one. The same hardware always gives the same disk, so several
// actions with one selector act on one disk.
type DiskSelector struct {
	// Pick: smallest (the default: the boot disk of a machine with data disks),
	// largest, or first (by kernel name).
	Pick string `json:"pick,omitempty"`
	// Type: ssd (not rotational), hdd (rotational), nvme (an NVMe namespace), or
	// empty for any.
	Type string `json:"type,omitempty"`
	// MinSize and MaxSize bound the size (512MiB, 200G, 2TB).
	MinSize string `json:"minSize,omitempty"`
	MaxSize string `json:"maxSize,omitempty"`
	// Model and Serial are shell patterns (path.Match), compared without case.
	Model  string `json:"model,omitempty"`
	Serial string `json:"serial,omitempty"`
	// Removable admits removable disks (USB sticks, SD cards), left out by default.
	Removable bool `json:"removable,omitempty"`
}

// ParseDiskSelector reads a "disk" argument that is not a path, refusing unknown
// keys and bad values with the field they are in.
func ParseDiskSelector(v any) (*DiskSelector, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("args.disk: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s DiskSelector
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("args.disk: a device path or a selector {pick, type, minSize, maxSize, model, serial, removable}: %v", err)
	}
	switch s.Pick {
	case "", "smallest", "largest", "first":
	default:
		return nil, fmt.Errorf("args.disk.pick: %q is not smallest, largest or first", s.Pick)
	}
	switch s.Type {
	case "", "ssd", "hdd", "nvme":
	default:
		return nil, fmt.Errorf("args.disk.type: %q is not ssd, hdd or nvme", s.Type)
	}
	for field, v := range map[string]string{"minSize": s.MinSize, "maxSize": s.MaxSize} {
		if v == "" {
			continue
		}
		if _, rest, err := ParseSize(v); err != nil || rest {
			return nil, fmt.Errorf("args.disk.%s: %q is not a size like 200G", field, v)
		}
	}
	for field, p := range map[string]string{"model": s.Model, "serial": s.Serial} {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("args.disk.%s: %q: %v", field, p, err)
		}
	}
	return &s, nil
}

// matches reports whether d passes the selector's filters.
func (s *DiskSelector) matches(d Disk) bool {
	if d.Removable && !s.Removable {
		return false
	}
	switch s.Type {
	case "ssd":
		if d.Rotational {
			return false
		}
	case "hdd":
		if !d.Rotational {
			return false
		}
	case "nvme":
		if !strings.HasPrefix(d.Name, "nvme") {
			return false
		}
	}
	if s.MinSize != "" {
		if min, _, _ := ParseSize(s.MinSize); uint64(d.SizeBytes) < min {
			return false
		}
	}
	if s.MaxSize != "" {
		if max, _, _ := ParseSize(s.MaxSize); uint64(d.SizeBytes) > max {
			return false
		}
	}
	glob := func(p, v string) bool {
		ok, _ := path.Match(strings.ToLower(p), strings.ToLower(v))
		return p == "" || ok
	}
	return glob(s.Model, d.Model) && glob(s.Serial, d.Serial)
}

// Select picks a disk among disks, or says why none matched (then no retry can help:
// the agent does not retry it).
func (s *DiskSelector) Select(disks []Disk) (Disk, error) {
	var ok []Disk
	for _, d := range disks {
		if s.matches(d) {
			ok = append(ok, d)
		}
	}
	if len(ok) == 0 {
		var have []string
		for _, d := range disks {
			kind := "ssd"
			if d.Rotational {
				kind = "hdd"
			}
			if d.Removable {
				kind += ", removable"
			}
			have = append(have, fmt.Sprintf("%s (%s, %s, %q)", d.Name, humanBytes(d.SizeBytes), kind, d.Model))
		}
		if len(have) == 0 {
			have = []string{"none"}
		}
		b, _ := json.Marshal(s)
		return Disk{}, fmt.Errorf("args.disk: no disk matches %s; this machine has: %s", b, strings.Join(have, "; "))
	}
	slices.SortStableFunc(ok, func(a, b Disk) int {
		switch s.Pick {
		case "largest":
			return cmp.Or(cmp.Compare(b.SizeBytes, a.SizeBytes), strings.Compare(a.Name, b.Name))
		case "", "smallest":
			return cmp.Or(cmp.Compare(a.SizeBytes, b.SizeBytes), strings.Compare(a.Name, b.Name))
		}
		return strings.Compare(a.Name, b.Name)
	})
	return ok[0], nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1e12:
		return fmt.Sprintf("%.1f TB", float64(n)/1e12)
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	default:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
}
