package dhcp

import (
	"testing"

	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
)

// BenchmarkDORAMemory is the protocol path alone, on MemoryLeases.
func BenchmarkDORAMemory(b *testing.B) {
	h := newHarness(b, fakeMachines{}, mustSubnet(b, "bench", dhcptest.BenchSubnet()))
	dhcptest.BenchDORA(b, h.handle)
}
