package dhcp

import (
	"strings"
	"sync/atomic"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DropReason says why a datagram got no answer.
type DropReason uint8

// Drop reasons, exported as the label of the drop counter.
const (
	DropMalformed       DropReason = iota // did not parse: short, bad cookie, bad option lengths
	DropTooLarge                          // larger than MaxPacketSize
	DropNotRequest                        // op is not BOOTREQUEST
	DropNotEthernet                       // htype/hlen not Ethernet's 1/6
	DropHops                              // relayed through more than 16 agents (RFC 1542 4.1.1)
	DropBOOTP                             // no message type: plain BOOTP is not served
	DropUnsupportedType                   // a reply type, or a type not valid on this port
	DropNoSubnet                          // no subnet for the interface or giaddr
	DropModeOff                           // the subnet's mode is off
	DropUnknownIgnored                    // unknown MAC on a subnet with unknownMachines: ignore
	DropNotNetboot                        // proxy mode: not a PXE or HTTP boot client
	DropNotForUs                          // another server's identifier, or a client selecting another server
	DropNoRecord                          // INIT-REBOOT or RELEASE of a client we have no lease for
	DropPoolExhausted                     // no free address
	DropBackendError                      // the lease store, machine lookup or booter failed
	DropDeclineLimited                    // a DECLINE beyond the quarantine limits
	DropNoServerAddress                   // no local IPv4 address to answer from
	DropOverload                          // the receive queue was full
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"malformed", "too_large", "not_request", "not_ethernet", "hops", "bootp",
	"unsupported_type", "no_subnet", "mode_off", "unknown_ignored", "not_netboot",
	"not_for_us", "no_record", "pool_exhausted", "backend_error", "decline_limited",
	"no_server_address", "overload",
}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// maxMsgType bounds the message types counted one by one (RFC 2132 9.6 defines
// 1 to 8 for a server); others, and datagrams that did not parse, count as 0.
const maxMsgType = 9

// Metrics are the server's counters, safe for concurrent use. Every datagram
// read is counted once in Received (by message type; 0 when it did not parse)
// and then either answered (Sent, by the reply's type: replies produced, of which
// SendErrors counts those the socket refused), dropped (Dropped, by reason), or
// handled without an answer (RELEASE, DECLINE).
type Metrics struct {
	received [maxMsgType]atomic.Uint64
	sent     [maxMsgType]atomic.Uint64
	dropped  [numDropReasons]atomic.Uint64
	// SendErrors counts replies the socket refused.
	SendErrors atomic.Uint64
	// Quarantined counts addresses put in decline quarantine.
	Quarantined atomic.Uint64
}

func msgIndex(t dhcpv4.MessageType) int {
	if int(t) < maxMsgType {
		return int(t)
	}
	return 0
}

func (m *Metrics) countReceived(t dhcpv4.MessageType) { m.received[msgIndex(t)].Add(1) }
func (m *Metrics) countSent(t dhcpv4.MessageType)     { m.sent[msgIndex(t)].Add(1) }
func (m *Metrics) countDrop(r DropReason) {
	if r < numDropReasons {
		m.dropped[r].Add(1)
	}
}

// Received returns how many messages of type t were received.
func (m *Metrics) Received(t dhcpv4.MessageType) uint64 { return m.received[msgIndex(t)].Load() }

// Sent returns how many replies of type t were sent.
func (m *Metrics) Sent(t dhcpv4.MessageType) uint64 { return m.sent[msgIndex(t)].Load() }

// Dropped returns how many datagrams were dropped for reason r.
func (m *Metrics) Dropped(r DropReason) uint64 {
	if r < numDropReasons {
		return m.dropped[r].Load()
	}
	return 0
}

// MetricsSnapshot is a copy of the counters, keyed by label value: message types
// in lower case ("discover", "ack"; "other" for datagrams that did not parse or
// carried another type)
// and drop reasons as DropReason.String gives them.
type MetricsSnapshot struct {
	Received, Sent, Dropped map[string]uint64
	SendErrors, Quarantined uint64
}

// Snapshot copies the counters, omitting zero ones; for a Prometheus collector.
func (m *Metrics) Snapshot() MetricsSnapshot {
	s := MetricsSnapshot{Received: map[string]uint64{}, Sent: map[string]uint64{}, Dropped: map[string]uint64{}}
	for i := range maxMsgType {
		name := "other"
		if i > 0 {
			name = strings.ToLower(dhcpv4.MessageType(i).String())
		}
		if v := m.received[i].Load(); v > 0 {
			s.Received[name] = v
		}
		if v := m.sent[i].Load(); v > 0 {
			s.Sent[name] = v
		}
	}
	for i := range numDropReasons {
		if v := m.dropped[i].Load(); v > 0 {
			s.Dropped[dropNames[i]] = v
		}
	}
	s.SendErrors = m.SendErrors.Load()
	s.Quarantined = m.Quarantined.Load()
	return s
}
