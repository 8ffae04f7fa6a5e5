package tftp

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    request
		wantErr bool
	}{
		{
			name: "plain rrq",
			in:   []byte("\x00\x01pxelinux.0\x00octet\x00"),
			want: request{op: opRRQ, filename: "pxelinux.0", mode: "octet"},
		},
		{
			name: "wrq",
			in:   []byte("\x00\x02up.bin\x00octet\x00"),
			want: request{op: opWRQ, filename: "up.bin", mode: "octet"},
		},
		{
			name: "mode and option names are case-insensitive",
			in:   []byte("\x00\x01a\x00NetASCII\x00BLKSIZE\x001468\x00TSize\x000\x00"),
			want: request{op: opRRQ, filename: "a", mode: "netascii", options: []option{{"blksize", "1468"}, {"tsize", "0"}}},
		},
		{
			name: "filename case is kept",
			in:   []byte("\x00\x01/Boot/X86.EFI\x00octet\x00"),
			want: request{op: opRRQ, filename: "/Boot/X86.EFI", mode: "octet"},
		},
		{
			name: "all four options",
			in:   []byte("\x00\x01f\x00octet\x00blksize\x008\x00tsize\x000\x00timeout\x003\x00windowsize\x0016\x00"),
			want: request{op: opRRQ, filename: "f", mode: "octet", options: []option{{"blksize", "8"}, {"tsize", "0"}, {"timeout", "3"}, {"windowsize", "16"}}},
		},
		{
			name: "first of repeated options wins",
			in:   []byte("\x00\x01f\x00octet\x00blksize\x00512\x00blksize\x001024\x00"),
			want: request{op: opRRQ, filename: "f", mode: "octet", options: []option{{"blksize", "512"}}},
		},
		{
			name: "NUL padding after the options is ignored",
			in:   []byte("\x00\x01f\x00octet\x00blksize\x00512\x00\x00\x00\x00"),
			want: request{op: opRRQ, filename: "f", mode: "octet", options: []option{{"blksize", "512"}}},
		},
		{
			name: "unterminated trailing option is dropped",
			in:   []byte("\x00\x01f\x00octet\x00tsize\x000\x00blksize\x001468"),
			want: request{op: opRRQ, filename: "f", mode: "octet", options: []option{{"tsize", "0"}}},
		},
		{
			name: "option without value is dropped",
			in:   []byte("\x00\x01f\x00octet\x00tsize\x00"),
			want: request{op: opRRQ, filename: "f", mode: "octet"},
		},
		{name: "empty", in: nil, wantErr: true},
		{name: "one byte", in: []byte{0}, wantErr: true},
		{name: "opcode only", in: []byte{0, 1}, wantErr: true},
		{name: "data opcode", in: []byte("\x00\x03f\x00octet\x00"), wantErr: true},
		{name: "ack opcode", in: []byte{0, 4, 0, 1}, wantErr: true},
		{name: "unknown opcode", in: []byte("\x00\x09f\x00octet\x00"), wantErr: true},
		{name: "filename not terminated", in: []byte("\x00\x01pxelinux.0"), wantErr: true},
		{name: "mode not terminated", in: []byte("\x00\x01f\x00octet"), wantErr: true},
		{name: "empty filename", in: []byte("\x00\x01\x00octet\x00"), wantErr: true},
		{name: "empty mode", in: []byte("\x00\x01f\x00\x00"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRequest(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseRequest(%q) = %+v, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseRequest(%q): %v", tt.in, err)
			}
			if got.op != tt.want.op || got.filename != tt.want.filename || got.mode != tt.want.mode || !slices.Equal(got.options, tt.want.options) {
				t.Errorf("parseRequest(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestEncodeRequestRoundTrip(t *testing.T) {
	opts := []option{{"blksize", "1468"}, {"windowsize", "16"}}
	b := encodeRequest(opRRQ, "ipxe.efi", "octet", opts)
	got, err := parseRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.filename != "ipxe.efi" || got.mode != "octet" || !slices.Equal(got.options, opts) {
		t.Errorf("round trip: %+v", got)
	}
}

func TestACK(t *testing.T) {
	for _, block := range []uint16{0, 1, 255, 256, 65535} {
		b := encodeACK(block)
		if len(b) != 4 {
			t.Fatalf("ACK len %d", len(b))
		}
		got, err := parseACK(b)
		if err != nil || got != block {
			t.Errorf("parseACK(encodeACK(%d)) = %d, %v", block, got, err)
		}
	}
	// Padded ACKs (some embedded stacks pad to a minimum frame) are accepted.
	if got, err := parseACK([]byte{0, 4, 1, 2, 0, 0, 0, 0}); err != nil || got != 258 {
		t.Errorf("padded ACK: %d, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0}, {0, 4}, {0, 4, 1}, {0, 3, 0, 1}, {0, 5, 0, 1}} {
		if _, err := parseACK(bad); err == nil {
			t.Errorf("parseACK(%v): want error", bad)
		}
	}
}

func TestData(t *testing.T) {
	b := make([]byte, hdrLen+3)
	putDataHeader(b, 65535)
	copy(b[hdrLen:], "abc")
	if !bytes.Equal(b, []byte("\x00\x03\xff\xffabc")) {
		t.Fatalf("DATA encoding %q", b)
	}
	block, payload, err := parseData(b)
	if err != nil || block != 65535 || string(payload) != "abc" {
		t.Errorf("parseData = %d %q %v", block, payload, err)
	}
	// An empty DATA packet is the legal end of a file of k*blksize bytes.
	if block, payload, err := parseData([]byte{0, 3, 0, 7}); err != nil || block != 7 || len(payload) != 0 {
		t.Errorf("empty DATA = %d %q %v", block, payload, err)
	}
	for _, bad := range [][]byte{nil, {0, 3}, {0, 3, 0}, {0, 4, 0, 1}} {
		if _, _, err := parseData(bad); err == nil {
			t.Errorf("parseData(%v): want error", bad)
		}
	}
}

func TestError(t *testing.T) {
	tests := []struct {
		code ErrorCode
		msg  string
		wire string
	}{
		{ErrCodeFileNotFound, "file not found", "\x00\x05\x00\x01file not found\x00"},
		{ErrCodeAccessViolation, "", "\x00\x05\x00\x02\x00"},
		{ErrCodeUnknownTID, "cut\x00here", "\x00\x05\x00\x05cut\x00"},
	}
	for _, tt := range tests {
		b := encodeError(tt.code, tt.msg)
		if string(b) != tt.wire {
			t.Errorf("encodeError(%d, %q) = %q, want %q", tt.code, tt.msg, b, tt.wire)
		}
		code, msg, err := parseError(b)
		if err != nil || code != tt.code || msg != strings.Split(tt.msg, "\x00")[0] {
			t.Errorf("parseError(%q) = %d %q %v", b, code, msg, err)
		}
	}
	// Missing NUL is tolerated.
	if code, msg, err := parseError([]byte("\x00\x05\x00\x08no")); err != nil || code != 8 || msg != "no" {
		t.Errorf("unterminated ERROR: %d %q %v", code, msg, err)
	}
	for _, bad := range [][]byte{nil, {0, 5}, {0, 5, 0}, {0, 4, 0, 1}} {
		if _, _, err := parseError(bad); err == nil {
			t.Errorf("parseError(%v): want error", bad)
		}
	}
}

func TestOACK(t *testing.T) {
	opts := []option{{"blksize", "1468"}, {"tsize", "123"}, {"windowsize", "16"}}
	b := encodeOACK(opts)
	if want := "\x00\x06blksize\x001468\x00tsize\x00123\x00windowsize\x0016\x00"; string(b) != want {
		t.Fatalf("encodeOACK = %q", b)
	}
	got, err := parseOACK(b)
	if err != nil || !slices.Equal(got, opts) {
		t.Errorf("parseOACK = %v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0, 6, 'a'}, []byte("\x00\x06a\x00b"), []byte("\x00\x01a\x00b\x00")} {
		if _, err := parseOACK(bad); err == nil {
			t.Errorf("parseOACK(%q): want error", bad)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	seeds := [][]byte{
		[]byte("\x00\x01pxelinux.0\x00octet\x00"),
		[]byte("\x00\x02f\x00octet\x00"),
		[]byte("\x00\x01a\x00netascii\x00blksize\x001468\x00tsize\x000\x00windowsize\x0016\x00timeout\x001\x00"),
		[]byte("\x00\x01f\x00octet\x00blksize\x00512\x00\x00\x00"),
		[]byte("\x00\x01f\x00octet\x00tsize"),
		[]byte("\x00\x01/../../etc/passwd\x00octet\x00"),
		{0, 1}, {0, 1, 0, 0}, {}, {0xff, 0xff, 0},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseRequest(b)
		if err != nil {
			return
		}
		if req.op != opRRQ && req.op != opWRQ {
			t.Fatalf("accepted opcode %v", req.op)
		}
		if req.filename == "" || req.mode == "" || strings.ContainsRune(req.filename, 0) {
			t.Fatalf("accepted bad fields %+v", req)
		}
		seen := map[string]bool{}
		for _, o := range req.options {
			if o.name == "" || o.name != strings.ToLower(o.name) || seen[o.name] {
				t.Fatalf("bad option list %+v", req.options)
			}
			seen[o.name] = true
		}
		// Re-encoding what was understood must parse to the same request.
		again, err := parseRequest(encodeRequest(req.op, req.filename, req.mode, req.options))
		if err != nil || again.filename != req.filename || again.mode != req.mode || !slices.Equal(again.options, req.options) {
			t.Fatalf("round trip of %+v: %+v, %v", req, again, err)
		}
		// Negotiation must stay within protocol bounds whatever the values.
		n := negotiate(req.options, req.mode, 1000, DefaultMaxBlockSize, DefaultMaxWindowSize)
		if n.blksize < minBlockSize || n.blksize > DefaultMaxBlockSize || n.window < 1 || n.window > DefaultMaxWindowSize {
			t.Fatalf("negotiated out of bounds: %+v", n)
		}
	})
}

// FuzzParseReply covers the parsers for packets the server receives on a
// transfer socket (ACK, ERROR) and the client-side ones (DATA, OACK).
func FuzzParseReply(f *testing.F) {
	for _, s := range [][]byte{
		encodeACK(0), encodeACK(65535), {0, 4, 0, 1, 0, 0},
		encodeError(ErrCodeOptionRefused, "no"), []byte("\x00\x05\x00\x00abc"),
		{0, 3, 0, 1, 'x'}, encodeOACK([]option{{"blksize", "8"}}), {0, 6, 'a'}, {},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if k, err := parseACK(b); err == nil && !bytes.Equal(encodeACK(k), b[:4]) {
			t.Fatalf("ACK %d does not re-encode to %v", k, b[:4])
		}
		if code, msg, err := parseError(b); err == nil {
			if strings.ContainsRune(msg, 0) {
				t.Fatalf("ERROR message with NUL: %q", msg)
			}
			if _, m2, err := parseError(encodeError(code, msg)); err != nil || m2 != msg {
				t.Fatalf("ERROR round trip %q: %q %v", msg, m2, err)
			}
		}
		if _, p, err := parseData(b); err == nil && len(p) != len(b)-hdrLen {
			t.Fatalf("DATA payload length %d of %d", len(p), len(b))
		}
		if opts, err := parseOACK(b); err == nil {
			if got, err := parseOACK(encodeOACK(opts)); err != nil || !slices.Equal(got, opts) {
				t.Fatalf("OACK round trip %v: %v %v", opts, got, err)
			}
		}
		// Anything at all must be classified without panicking.
		_, _ = peekOpcode(b)
	})
}
