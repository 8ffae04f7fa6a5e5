package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Boot entries of A/B slots, for systemd-boot (the Boot Loader Specification,
// type #1, and systemd's Automatic Boot Assessment):
//
//	loader/entries/kiln-0007-slot-b+3.conf
//
// Why boot counting and not UEFI BootNext: systemd-boot decrements the counter in
// the file name (+3 -> +2-1 -> ... -> +0-3) on the ESP at every attempt, before the
// kernel runs, and orders an entry with no tries left after every other one, so a
// slot that does not come up (kernel panic, a root hash the kernel refuses, a hang
// that the watchdog or Kiln's power cycle ends) falls back to the other slot without
// anything running on the machine or in Kiln. The booted system blesses the entry
// (systemd-bless-boot renames it to kiln-0007-slot-b.conf) once it is good. BootNext
// is one boot only and needs the running OS to write EFI variables; it cannot say
// "fall back after three failures".
//
// Ordering: systemd-boot sorts entries by sort-key, then by version, newest first,
// and boots the first one that has tries left; each new entry gets the next
// generation number as its version, so the newest slot written boots first and the
// other slot's entry, older, is the fallback. Entries of the slot being written are
// removed: they would boot a root that no longer matches their root hash.

var slotEntryName = regexp.MustCompile(`^kiln-([0-9]{1,9})-slot-([ab])(\+[0-9]+(-[0-9]+)?)?\.conf$`)

// writeSlotEntry writes the boot entry of o's slot into the ESP mounted at esp and
// removes the slot's older entries. It returns the new entry's file name.
func writeSlotEntry(esp string, o *slotArgs) (string, error) {
	dir := filepath.Join(esp, "loader", "entries")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	gen, otherSlot := 0, false
	var stale []string
	for _, e := range entries {
		m := slotEntryName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		gen = max(gen, n)
		if m[2] == o.slot {
			stale = append(stale, e.Name())
		} else {
			otherSlot = true
		}
	}
	gen++
	// Boot counting needs somewhere to fall back to: the first slot ever written
	// (nothing in the other slot) boots without a counter, as the only system.
	name := fmt.Sprintf("kiln-%04d-slot-%s", gen, o.slot)
	if otherSlot {
		name += fmt.Sprintf("+%d", o.tries)
	}
	name += ".conf"
	if err := writeIntoRoot(esp, "/loader/entries/"+name, []byte(slotEntry(o, gen)), 0o644, 0, 0); err != nil {
		return "", err
	}
	for _, old := range stale {
		if err := os.Remove(filepath.Join(dir, old)); err != nil {
			return "", fmt.Errorf("remove the old entry %s of slot %s: %w", old, o.slot, err)
		}
	}
	return name, nil
}

// slotEntry is the entry's text. The command line tells systemd where the slot's
// verity device is (systemd-veritysetup-generator's roothash=,
// systemd.verity_root_data=, systemd.verity_root_hash=) and the system which slot
// and version it runs (kiln.slot=, kiln.version=), which it reports when it phones
// home.
func slotEntry(o *slotArgs, gen int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "title Kiln slot %s: %s\n", o.slot, o.version)
	b.WriteString("sort-key kiln\n")
	fmt.Fprintf(&b, "version %d\n", gen)
	if o.efi != "" {
		fmt.Fprintf(&b, "efi %s\n", o.efi)
	} else {
		fmt.Fprintf(&b, "linux %s\n", o.linux)
		for _, i := range slices.DeleteFunc(slices.Clone(o.initrds), func(s string) bool { return s == "" }) {
			fmt.Fprintf(&b, "initrd %s\n", i)
		}
	}
	opts := strings.TrimSpace(strings.Join([]string{o.cmdline,
		fmt.Sprintf("roothash=%x", o.rootHash),
		"systemd.verity_root_data=PARTLABEL=root-" + o.slot,
		"systemd.verity_root_hash=PARTLABEL=root-" + o.slot + "-verity",
		"kiln.slot=" + o.slot, "kiln.version=" + o.version}, " "))
	fmt.Fprintf(&b, "options %s\n", opts)
	return b.String()
}
