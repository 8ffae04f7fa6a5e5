package attest

import (
	"cmp"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"

	"github.com/google/go-attestation/attest"
)

// Measurements is what a verified quote and its replayed event log say the
// machine booted. All digests are hex SHA-256.
type Measurements struct {
	// PCRs are the quoted values of MeasuredPCRs, by index.
	PCRs map[int]string `json:"pcrs"`
	// Events are the replayed events of each measured PCR, in log order.
	Events map[int][]Event `json:"events,omitempty"`
	// SecureBoot is the SecureBoot variable measured into PCR 7.
	SecureBoot bool `json:"secureBoot"`
	// SecureBootKeys are the sha256 of the PK, KEK and db certificates measured
	// into PCR 7, prefixed "PK:", "KEK:", "db:".
	SecureBootKeys []string `json:"secureBootKeys,omitempty"`
	// Firmware are the PCR 0 code measurements (CRTM version and contents,
	// firmware volumes).
	Firmware []string `json:"firmware,omitempty"`
	// BootApplications are the Authenticode digests of the EFI applications the
	// firmware started (PCR 4): iPXE or the boot loader, then the kernel (EFI
	// stub) or UKI. Kiln can compute the same digest of a kernel it served.
	BootApplications []string `json:"bootApplications,omitempty"`
	// Kernel is the last EFI application measured into PCR 4: the kernel or UKI
	// the boot loader started.
	Kernel string `json:"kernel,omitempty"`
	// KernelArtifact names the artifact Kiln served whose Authenticode digest is
	// Kernel ("kernel NAME" or "uki NAME"); set by the enrollment service when it
	// checked the measurement against the profile's artifacts.
	KernelArtifact string `json:"kernelArtifact,omitempty"`
	// Initrd is the Linux EFI stub's measurement of the initrd into PCR 9.
	Initrd string `json:"initrd,omitempty"`
	// UKI are the systemd-stub measurements of a UKI's sections into PCR 11.
	UKI []string `json:"uki,omitempty"`
}

// Event is one replayed event: its type and the digest extended into its PCR.
type Event struct {
	Type   string `json:"type"`
	Digest string `json:"digest"`
	// Description is the event data when it is short text (what EV_EVENT_TAG,
	// EV_IPL and EV_EFI_ACTION events say), for the operator.
	Description string `json:"description,omitempty"`
}

// TCG event types Kiln reads (TCG PC Client Platform Firmware Profile, table 9);
// go-attestation keeps its constants internal.
const (
	evEventTag                   attest.EventType = 0x00000006
	evSCRTMContents              attest.EventType = 0x00000007
	evSCRTMVersion               attest.EventType = 0x00000008
	evEFIBootServicesApplication attest.EventType = 0x80000003
	evEFIPlatformFirmwareBlob    attest.EventType = 0x80000008
)

// linuxInitrdTag is the Linux EFI stub's event tag for the initrd it measures
// into PCR 9 (drivers/firmware/efi/libstub/efi-stub-helper.c, INITRD_EVENT_TAG_ID).
const linuxInitrdTagID = 0x8F3B22EC

func extractMeasurements(values map[int][]byte, events []attest.Event) (Measurements, error) {
	m := Measurements{PCRs: map[int]string{}, Events: map[int][]Event{}}
	for _, i := range MeasuredPCRs() {
		m.PCRs[i] = hex.EncodeToString(values[i])
	}
	for _, e := range events {
		if !slices.Contains(MeasuredPCRs(), e.Index) {
			continue
		}
		d := hex.EncodeToString(e.Digest)
		m.Events[e.Index] = append(m.Events[e.Index], Event{Type: e.Type.String(), Digest: d, Description: describe(e)})
		switch {
		case e.Index == 0 && (e.Type == evSCRTMVersion || e.Type == evSCRTMContents || e.Type == evEFIPlatformFirmwareBlob):
			m.Firmware = append(m.Firmware, d)
		case e.Index == 4 && e.Type == evEFIBootServicesApplication:
			m.BootApplications = append(m.BootApplications, d)
			m.Kernel = d
		case e.Index == 9 && e.Type == evEventTag && isLinuxInitrdTag(e.Data):
			m.Initrd = d
		case e.Index == 11:
			m.UKI = append(m.UKI, d)
		}
	}
	// ParseSecurebootState reads only events whose digests replayed (it checks the
	// variable data against them), so a log cannot claim Secure Boot it did not
	// measure.
	sb, err := attest.ParseSecurebootState(events)
	if err == nil {
		m.SecureBoot = sb.Enabled
		for _, k := range []struct {
			name  string
			certs []x509.Certificate
		}{{"PK", sb.PlatformKeys}, {"KEK", sb.ExchangeKeys}, {"db", sb.PermittedKeys}} {
			for _, c := range k.certs {
				sum := sha256.Sum256(c.Raw)
				m.SecureBootKeys = append(m.SecureBootKeys, k.name+":"+hex.EncodeToString(sum[:]))
			}
		}
	}
	// A PCR 7 whose variables do not parse is still compared by its value;
	// Secure Boot is then reported off.
	return m, nil
}

func isLinuxInitrdTag(data []byte) bool {
	// TCG_PCClientTaggedEvent: UINT32 taggedEventID, UINT32 size, data.
	return len(data) >= 8 && uint32(data[0])|uint32(data[1])<<8|uint32(data[2])<<16|uint32(data[3])<<24 == linuxInitrdTagID
}

// describe renders short textual event data (ASCII or UTF-16, as firmware writes
// it) for the operator; binary data gets no description.
func describe(e attest.Event) string {
	d := e.Data
	if e.Type == evEventTag && len(d) >= 8 {
		d = d[8:]
	}
	if len(d) == 0 || len(d) > 256 {
		return ""
	}
	if s, ok := printable(string(d)); ok {
		return s
	}
	if len(d)%2 == 0 {
		u := make([]uint16, len(d)/2)
		for i := range u {
			u[i] = uint16(d[2*i]) | uint16(d[2*i+1])<<8
		}
		if s, ok := printable(string(utf16.Decode(u))); ok {
			return s
		}
	}
	return ""
}

func printable(s string) (string, bool) {
	s = strings.TrimRight(s, "\x00")
	if s == "" {
		return "", false
	}
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			return "", false
		}
	}
	return s, true
}

// Change is one difference between a baseline and a new measurement: which PCR,
// from what to what, and the first event that differs.
type Change struct {
	PCR  int    `json:"pcr"`
	From string `json:"from"`
	To   string `json:"to"`
	// Event says which event differs ("event 3 EV_EFI_BOOT_SERVICES_APPLICATION:
	// 1a2b... -> 3c4d..."), empty when the logs cannot tell.
	Event string `json:"event,omitempty"`
}

func (c Change) String() string {
	s := fmt.Sprintf("pcr %d changed from %s to %s", c.PCR, short(c.From), short(c.To))
	if c.Event != "" {
		s += " (" + c.Event + ")"
	}
	return s
}

func short(d string) string {
	if len(d) > 16 {
		return d[:16] + "…"
	}
	return cmp.Or(d, "(none)")
}

// Compare lists the measured PCRs whose values differ between baseline and got,
// in PCR order, each with the first differing event. A PCR whose only difference is
// an event that changes on every boot (variableEvent) is not a change, when the
// baseline has that PCR's events to tell.
func Compare(baseline, got Measurements) []Change {
	var changes []Change
	idx := slices.Sorted(maps.Keys(baseline.PCRs))
	for _, i := range idx {
		if baseline.PCRs[i] == got.PCRs[i] {
			continue
		}
		from, to := stableEvents(i, baseline.Events[i]), stableEvents(i, got.Events[i])
		if len(baseline.Events[i]) > 0 && len(from) < len(baseline.Events[i]) && slices.Equal(from, to) {
			continue
		}
		changes = append(changes, Change{PCR: i, From: baseline.PCRs[i], To: got.PCRs[i], Event: firstEventChange(from, to)})
	}
	return changes
}

// variableEvent: an event whose digest differs on every boot by design. The Linux
// EFI stub measures its load options, the kernel command line, into PCR 9
// ("LOADED_IMAGE::LoadOptions"), and Kiln's agent command line carries a per-boot
// token. Its replay is still checked; only the comparison leaves it out (so the
// command line is not part of the baseline; the initrd, the kernel and the rest
// are).
func variableEvent(pcr int, e Event) bool {
	return pcr == 9 && e.Description == "LOADED_IMAGE::LoadOptions"
}

func stableEvents(pcr int, events []Event) []Event {
	return slices.DeleteFunc(slices.Clone(events), func(e Event) bool { return variableEvent(pcr, e) })
}

func firstEventChange(from, to []Event) string {
	for k := range max(len(from), len(to)) {
		switch {
		case k >= len(from):
			return fmt.Sprintf("event %d %s added: %s", k, to[k].Type, eventLabel(to[k]))
		case k >= len(to):
			return fmt.Sprintf("event %d %s removed: %s", k, from[k].Type, eventLabel(from[k]))
		case from[k].Digest != to[k].Digest || from[k].Type != to[k].Type:
			return fmt.Sprintf("event %d %s: %s -> %s", k, to[k].Type, eventLabel(from[k]), eventLabel(to[k]))
		}
	}
	return ""
}

func eventLabel(e Event) string {
	if e.Description != "" {
		return short(e.Digest) + " " + strconv.Quote(e.Description)
	}
	return short(e.Digest)
}
