package dhcp

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
)

// fakeIfaceReads stands in for the netlink reads of an interface cache: the
// first failures calls fail, the others return entry; reads counts them all.
type fakeIfaceReads struct {
	failures int
	entry    ifaceEntry
	reads    int
}

func (f *fakeIfaceReads) read(_ int, now time.Time) (ifaceEntry, error) {
	f.reads++
	if f.reads <= f.failures {
		return ifaceEntry{}, errors.New("netlink dump interrupted")
	}
	e := f.entry
	e.at = now
	return e, nil
}

// TestIfaceCacheLookup: an interface's name and addresses are reused for
// ifaceCacheTTL, then read again; a failed read is tried three times in all, and
// when all fail the last entry known (else nothing) is the answer.
func TestIfaceCacheLookup(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	fresh := ifaceEntry{name: "kd0", addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}}
	cached := ifaceEntry{name: "old0", addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}
	tests := []struct {
		name      string
		cachedAge time.Duration // <0: nothing cached
		failures  int
		wantName  string
		wantReads int
	}{
		{"cached just now", 0, 0, "old0", 0},
		{"cached just under the TTL", ifaceCacheTTL - time.Nanosecond, 0, "old0", 0},
		{"cached exactly the TTL ago", ifaceCacheTTL, 0, "kd0", 1},
		{"cached past the TTL", ifaceCacheTTL + time.Second, 0, "kd0", 1},
		{"nothing cached", -1, 0, "kd0", 1},
		{"first read fails", -1, 1, "kd0", 2},
		{"two reads fail", -1, 2, "kd0", 3},
		{"three reads fail, nothing known", -1, 3, "", 3},
		{"three reads fail, a stale entry known", ifaceCacheTTL + time.Second, 3, "old0", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeIfaceReads{failures: tt.failures, entry: fresh}
			c := &ifaceCache{readFn: f.read}
			if tt.cachedAge >= 0 {
				e := cached
				e.at = now.Add(-tt.cachedAge)
				c.m = map[int]ifaceEntry{7: e}
			}
			name, addrs := c.lookup(7, now)
			if name != tt.wantName {
				t.Errorf("name %q, want %q", name, tt.wantName)
			}
			if f.reads != tt.wantReads {
				t.Errorf("%d reads, want %d", f.reads, tt.wantReads)
			}
			switch tt.wantName {
			case "kd0":
				if len(addrs) != 1 || addrs[0] != fresh.addrs[0] {
					t.Errorf("addresses %v, want %v", addrs, fresh.addrs)
				}
				// What was read is what the next lookup reuses.
				if again, _ := c.lookup(7, now); again != "kd0" || f.reads != tt.wantReads {
					t.Errorf("second lookup: %q after %d reads, want the cached kd0", again, f.reads)
				}
			case "old0":
				if len(addrs) != 1 || addrs[0] != cached.addrs[0] {
					t.Errorf("addresses %v, want %v", addrs, cached.addrs)
				}
			default:
				if addrs != nil {
					t.Errorf("addresses %v, want none", addrs)
				}
			}
		})
	}
}

// panickingMachines is a Machines seam with a bug.
type panickingMachines struct{}

func (panickingMachines) MachineByMAC(context.Context, net.HardwareAddr) (*Machine, error) {
	panic("machine lookup bug")
}

// TestServeOne drives a worker's step without a socket (none of the datagrams is
// answered): the receiving interface is looked up only when the datagram has one
// (index 0: IP_PKTINFO absent), and a panic in a seam is logged as such, while a
// datagram that is merely dropped logs no error.
func TestServeOne(t *testing.T) {
	discover := dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover).ToBytes()
	tests := []struct {
		name      string
		machines  Machines
		b         []byte
		ifindex   int
		wantReads int
		wantPanic bool // an error logged naming the panic
	}{
		{"no receiving interface", nil, []byte{1}, 0, 0, false},
		{"receiving interface known", nil, []byte{1}, 7, 1, false},
		{"a seam panics", panickingMachines{}, discover, 7, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			f := &fakeIfaceReads{entry: ifaceEntry{name: "kd0", addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}}}
			srv := &Server{
				Subnets:  StaticSubnets{mustSubnet(t, "lab", dhcptest.LabSubnet())},
				Machines: tt.machines,
				Leases:   NewMemoryLeases(),
				Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError})),
			}
			srv.ifaces.readFn = f.read
			d := datagram{b: tt.b, src: netip.MustParseAddrPort("0.0.0.0:68"), ifindex: tt.ifindex}
			out := srv.serveOne(context.Background(), nil, ServerPort, d, make([]byte, 0, 1500))
			if !tt.wantPanic && cap(out) != 1500 {
				t.Errorf("the worker's buffer was not handed back (cap %d)", cap(out))
			}
			if f.reads != tt.wantReads {
				t.Errorf("%d interface reads, want %d", f.reads, tt.wantReads)
			}
			logged := logs.String()
			if tt.wantPanic {
				if !strings.Contains(logged, "panic while handling a datagram") || !strings.Contains(logged, "machine lookup bug") {
					t.Errorf("panic not logged: %q", logged)
				}
			} else if logged != "" {
				t.Errorf("errors logged for a datagram that did not panic: %q", logged)
			}
		})
	}
}

// TestDropReasonStringOutOfRange: a reason past the list is "unknown", not a
// panic (metrics label a reason they were not built with).
func TestDropReasonStringOutOfRange(t *testing.T) {
	for _, tt := range []struct {
		r    DropReason
		want string
	}{
		{numDropReasons - 1, "overload"},
		{numDropReasons, "unknown"},
		{numDropReasons + 1, "unknown"},
	} {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("DropReason(%d) = %q, want %q", tt.r, got, tt.want)
		}
	}
}

// TestClientIdentifierMinimumLength: RFC 2132 9.14 asks for at least 2 bytes of
// option 61 (a type and one byte); exactly 2 is valid.
func TestClientIdentifierMinimumLength(t *testing.T) {
	for _, tt := range []struct {
		id []byte
		ok bool
	}{
		{[]byte{0}, false},
		{[]byte{0, 7}, true},
		{[]byte{0, 7, 8}, true},
	} {
		b := dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(tt.id))).ToBytes()
		_, err := ParsePacket(b)
		if (err == nil) != tt.ok {
			t.Errorf("client identifier of length %d: parse error %v, want ok=%v", len(tt.id), err, tt.ok)
		}
	}
}

// TestOwnsWithoutMAC: a lease without a MAC is owned only by its client
// identifier; two missing MACs are not a match.
func TestOwnsWithoutMAC(t *testing.T) {
	lease := &Lease{IP: netip.MustParseAddr("10.0.0.100"), ClientID: []byte{0, 1, 2}}
	tests := []struct {
		name string
		c    Client
		want bool
	}{
		{"no MAC, another client identifier", Client{ClientID: []byte{0, 9, 9}}, false},
		{"no MAC, no client identifier", Client{}, false},
		{"no MAC, the lease's client identifier", Client{ClientID: []byte{0, 1, 2}}, true},
		{"a MAC, the lease's client identifier", Client{MAC: dhcptest.MAC(macA), ClientID: []byte{0, 1, 2}}, true},
	}
	for _, tt := range tests {
		if got := tt.c.Owns(lease); got != tt.want {
			t.Errorf("%s: Owns = %v, want %v", tt.name, got, tt.want)
		}
	}
}
