package tftp

import "io"

// netasciiReader converts a local (Unix) byte stream to netascii on the fly, as
// RFC 1350 requires for mode "netascii" (it refers to the Telnet NVT rules, RFC
// 764): LF becomes CR LF and a bare CR becomes CR NUL. The output is longer than
// the input, which is why the server neither offers tsize nor seeks in this mode.
type netasciiReader struct {
	r          io.Reader
	buf        [4096]byte
	start, end int
	err        error
	pending    byte // second byte of an expansion that did not fit into p
	hasPending bool
}

func newNetasciiReader(r io.Reader) *netasciiReader { return &netasciiReader{r: r} }

func (n *netasciiReader) Read(p []byte) (int, error) {
	out := 0
	for out < len(p) {
		if n.hasPending {
			p[out] = n.pending
			n.hasPending = false
			out++
			continue
		}
		if n.start == n.end {
			if out > 0 {
				return out, nil
			}
			if n.err != nil {
				return 0, n.err
			}
			m, err := n.r.Read(n.buf[:])
			n.start, n.end, n.err = 0, m, err
			continue
		}
		c := n.buf[n.start]
		n.start++
		switch c {
		case '\n':
			p[out], n.pending, n.hasPending = '\r', '\n', true
		case '\r':
			p[out], n.pending, n.hasPending = '\r', 0, true
		default:
			p[out] = c
		}
		out++
	}
	return out, nil
}
