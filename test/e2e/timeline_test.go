package e2e

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

// step is one expected entry of a machine's timeline: an event of Type whose message
// contains each of Contains.
type step struct {
	Type     string
	Contains []string
}

func (s step) String() string {
	return fmt.Sprintf("%s %q", s.Type, s.Contains)
}

// netbootSteps is the timeline of a machine that netboots the phone-home profile:
// its boot script, the kernel, the initrd, then the initramfs's phone-home.
// platform is iPXE's ${platform}: pcbios or efi.
func netbootSteps(mac, platform string) []step {
	return []step{
		{"BootScript", []string{"served install script", mac, platform}},
		{"ArtifactFetched", []string{kernelArtifact + ":"}},
		{"ArtifactFetched", []string{initrdArtifact + ":"}},
		{"PhoneHome", []string{mac + " phoned home"}},
	}
}

// matchSteps finds steps in order in evs; it returns the index of each matched event
// and how many steps matched.
func matchSteps(evs []event, steps []step) ([]int, int) {
	var idx []int
	i := 0
	for _, s := range steps {
		found := false
		for ; i < len(evs); i++ {
			if evs[i].Type == s.Type && containsAll(evs[i].Message, s.Contains) {
				idx = append(idx, i)
				found = true
				i++
				break
			}
		}
		if !found {
			return idx, len(idx)
		}
	}
	return idx, len(idx)
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func formatTimeline(evs []event) string {
	if len(evs) == 0 {
		return "  (no events)"
	}
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	return strings.TrimRight(b.String(), "\n")
}

// waitTimeline polls the machine's events until steps appear in order, and fails the
// test if they do not before timeout, or within a few seconds of the VM ending.
func waitTimeline(t *testing.T, k *kilnServer, v *vm, machine string, steps []step, timeout time.Duration) []event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var exitedAt time.Time
	var evs []event
	var lastErr error
	for {
		var err error
		if evs, err = k.events(machine); err != nil {
			lastErr = err
		} else if _, n := matchSteps(evs, steps); n == len(steps) {
			return evs
		}
		if exitedAt.IsZero() && (v.exited() || v.stuck() != "") {
			exitedAt = time.Now()
		}
		// Events of the last request may land just after QEMU exits.
		if !exitedAt.IsZero() && time.Since(exitedAt) > 3*time.Second {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	_, n := matchSteps(evs, steps)
	why := fmt.Sprintf("not within %s", timeout)
	if !exitedAt.IsZero() {
		why = fmt.Sprintf("and QEMU exited %.1fs after start", exitedAt.Sub(v.started).Seconds())
		if s := v.stuck(); s != "" {
			why = fmt.Sprintf("and the firmware gave up (%q) %.1fs after QEMU start", s, exitedAt.Sub(v.started).Seconds())
		}
	}
	if lastErr != nil {
		why += fmt.Sprintf(" (last events error: %v)", lastErr)
	}
	t.Fatalf("machine %s: timeline lacks step %d of %d, %v, %s\ntimeline:\n%s",
		machine, n+1, len(steps), steps[n], why, formatTimeline(evs))
	return nil
}

// assertNetboot checks a complete netboot timeline, logs it with the time from QEMU
// start to phone-home, and returns the address the booted kernel got by DHCP.
func assertNetboot(t *testing.T, v *vm, machine string, evs []event, steps []step) netip.Addr {
	t.Helper()
	idx, n := matchSteps(evs, steps)
	if n != len(steps) {
		t.Fatalf("machine %s: timeline lacks %v\n%s", machine, steps[n], formatTimeline(evs))
	}
	for i := 1; i < len(idx); i++ {
		if evs[idx[i]].Time.Before(evs[idx[i-1]].Time) {
			t.Errorf("machine %s: %s recorded before %s", machine, evs[idx[i]], evs[idx[i-1]])
		}
	}
	home := evs[idx[len(idx)-1]]
	t.Logf("machine %s: phoned home %.1fs after QEMU start; timeline:\n%s",
		machine, home.Time.Sub(v.started).Seconds(), formatTimeline(evs))
	return phoneHomeAddr(t, home)
}

// phoneHomeRE finds the address the initramfs reports ("initrd up on eth0 10.77.0.21 ...").
var phoneHomeRE = regexp.MustCompile(`initrd up on \S+ (\S+)`)

func phoneHomeAddr(t *testing.T, e event) netip.Addr {
	t.Helper()
	m := phoneHomeRE.FindStringSubmatch(e.Message)
	if m == nil {
		t.Fatalf("phone-home message has no address: %q", e.Message)
	}
	a, err := netip.ParseAddr(m[1])
	if err != nil {
		t.Fatalf("phone-home message: address %q: %v", m[1], err)
	}
	return a
}

// inRange reports whether a lies in [first, last].
func inRange(a netip.Addr, first, last string) bool {
	return a.Compare(netip.MustParseAddr(first)) >= 0 && a.Compare(netip.MustParseAddr(last)) <= 0
}
