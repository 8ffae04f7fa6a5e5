package tftp

import (
	"strconv"
	"time"
)

// negotiated is the outcome of option negotiation for one read request.
type negotiated struct {
	blksize int
	window  int
	timeout time.Duration // 0: the server's default
	tsize   int64         // -1: not sent
	oack    []option      // nil: no OACK, start with DATA 1 (RFC 1350 behaviour)
}

// negotiate answers the options of a read request (RFC 2347 section 3).
//
// Unknown options and options with invalid values are left out of the OACK,
// which is how RFC 2347 lets a server decline them; the client then uses the
// RFC 1350 default for that option. If nothing is acknowledged no OACK is sent
// at all and the transfer starts with DATA 1, exactly like a server without
// option support.
func negotiate(opts []option, mode string, size int64, maxBlk, maxWin int) negotiated {
	n := negotiated{blksize: defaultBlockSize, window: 1, tsize: -1}
	for _, o := range opts {
		switch o.name {
		case "blksize":
			// RFC 2348: 8..65464 octets. The server may answer a smaller value
			// than asked, never a larger one; clamping keeps each DATA packet in
			// one Ethernet frame (1468 = 1500 - 20 IP - 8 UDP - 4 TFTP), since
			// fragmented UDP is where PXE transfers stall.
			v, ok := atoi(o.value)
			if !ok || v < minBlockSize {
				continue
			}
			n.blksize = min(v, maxBlockSize, maxBlk)
			n.oack = append(n.oack, option{o.name, strconv.Itoa(n.blksize)})
		case "tsize":
			// RFC 2349 section 4: the client sends 0 in an RRQ and the server
			// answers with the file size. In netascii mode the transferred size
			// differs from the file size and is not known before reading, so
			// the option is declined (as tftp-hpa does). For an empty file it
			// is declined too: curl (7.88, Debian 12) rejects "tsize 0" in an
			// OACK as invalid and drops the transfer without an ERROR, and
			// the client learns the size from the empty DATA 1 just as fast.
			if _, ok := atoi(o.value); !ok || size <= 0 || mode != "octet" {
				continue
			}
			n.tsize = size
			n.oack = append(n.oack, option{o.name, strconv.FormatInt(size, 10)})
		case "timeout":
			// RFC 2349 section 3: 1..255 seconds, and the server must echo the
			// value unchanged or decline it.
			v, ok := atoi(o.value)
			if !ok || v < 1 || v > 255 {
				continue
			}
			n.timeout = time.Duration(v) * time.Second
			n.oack = append(n.oack, option{o.name, strconv.Itoa(v)})
		case "windowsize":
			// RFC 7440 section 3: 1..65535 blocks; the server may answer less.
			v, ok := atoi(o.value)
			if !ok || v < 1 {
				continue
			}
			n.window = min(v, maxWindowSize, maxWin)
			n.oack = append(n.oack, option{o.name, strconv.Itoa(n.window)})
		}
	}
	return n
}

// atoi parses a non-negative decimal option value; values too large for an int
// saturate, so "blksize 99999999999999" is clamped rather than declined.
func atoi(s string) (int, bool) {
	if s == "" || len(s) > 20 {
		return 0, false
	}
	v := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		if v <= 1<<27 { // saturate below 2^31 so 32-bit platforms cannot overflow
			v = v*10 + int(c-'0')
		}
	}
	return v, true
}
