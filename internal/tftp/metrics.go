package tftp

import "sync/atomic"

// Metrics are the server's counters, safe for concurrent use. Kiln exports them
// to Prometheus. Every counted request ends up in exactly one of Refused,
// TransfersCompleted, TransfersFailed or TransfersAborted; TransfersStarted
// counts those that got past the Handler.
type Metrics struct {
	Requests           atomic.Uint64 // well-formed RRQ and WRQ packets, duplicates excluded
	Refused            atomic.Uint64 // requests answered with an ERROR packet (WRQ, bad mode, handler error, busy)
	RefusedBusy        atomic.Uint64 // of Refused: "server busy", a transfers cap was reached
	RefusedBusyAddress atomic.Uint64 // of RefusedBusy: the client's address had MaxTransfersPerAddress running
	TransfersStarted   atomic.Uint64
	TransfersCompleted atomic.Uint64 // the last block was acknowledged
	TransfersFailed    atomic.Uint64 // timed out, I/O error or server shutdown
	TransfersAborted   atomic.Uint64 // the client sent an ERROR (for example after a tsize-only probe)
	BytesSent          atomic.Uint64 // DATA payload bytes written, retransmissions included
	Retransmits        atomic.Uint64 // DATA and OACK packets sent again
	MalformedPackets   atomic.Uint64 // packets dropped because they did not parse or were unexpected
	UnknownTID         atomic.Uint64 // packets from a foreign address/port at a transfer socket
	DuplicateRequests  atomic.Uint64 // retransmitted RRQs ignored while their transfer runs
}
