package attest

import (
	"strings"
	"testing"
)

// TestCompareLeavesOutTheCommandLine: the Linux EFI stub's measurement of the kernel
// command line changes on every boot (it carries Kiln's per-boot token): a PCR 9
// that differs only there is no change; one whose initrd differs is, and the change
// names the initrd's event.
func TestCompareLeavesOutTheCommandLine(t *testing.T) {
	cmdline := func(d string) Event {
		return Event{Type: "EV_EVENT_TAG", Digest: d, Description: "LOADED_IMAGE::LoadOptions"}
	}
	initrd := func(d string) Event { return Event{Type: "EV_EVENT_TAG", Digest: d, Description: "Linux initrd"} }
	m := func(pcr9 string, events ...Event) Measurements {
		return Measurements{PCRs: map[int]string{4: "k", 9: pcr9}, Events: map[int][]Event{9: events}}
	}
	base := m("p1", cmdline("c1"), initrd("i1"))
	if c := Compare(base, m("p2", cmdline("c2"), initrd("i1"))); len(c) != 0 {
		t.Errorf("another command line only: %v, want no change", c)
	}
	c := Compare(base, m("p3", cmdline("c3"), initrd("i2")))
	if len(c) != 1 || c[0].PCR != 9 || !strings.Contains(c[0].Event, `event 0 EV_EVENT_TAG: i1 "Linux initrd" -> i2`) {
		t.Errorf("another initrd: %v, want pcr 9 naming the initrd's event", c)
	}
	// A baseline without events (accepted from a quote that kept none) compares
	// the values only.
	if c := Compare(Measurements{PCRs: map[int]string{9: "p1"}}, m("p2", cmdline("c2"), initrd("i1"))); len(c) != 1 {
		t.Errorf("baseline without events: %v, want the value change", c)
	}
	// Another PCR's change is never left out.
	other := m("p1", cmdline("c1"), initrd("i1"))
	other.PCRs[4] = "k2"
	if c := Compare(base, other); len(c) != 1 || c[0].PCR != 4 {
		t.Errorf("another kernel: %v, want pcr 4", c)
	}
}
