package tftp

import (
	"errors"
	"testing"
	"time"
)

// TestErrorText: an Error's text for the log carries its detail when it has one
// (what the client is not told), and its code and message otherwise; the
// detail stays reachable with errors.Is.
func TestErrorText(t *testing.T) {
	detail := errors.New("open /srv/tftp/x: permission denied")
	cases := []struct {
		err  *Error
		want string
	}{
		{&Error{Code: ErrCodeAccessViolation, Message: "access violation", Err: detail}, "access violation: open /srv/tftp/x: permission denied"},
		{&Error{Code: ErrCodeDiskFull, Message: "disk full"}, "tftp error 3: disk full"},
		{accessViolation("path %q contains a .. component", "../x"), `access violation: path "../x" contains a .. component`},
	}
	for _, c := range cases {
		if got := c.err.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
	}
	if !errors.Is(cases[0].err, detail) || errors.Unwrap(cases[1].err) != nil {
		t.Error("Unwrap does not give the detail (or gives one that is not there)")
	}
}

// TestNegotiateBounds: the inclusive ends of each option's range (RFC 2348, 2349,
// 7440) and of the option value's length (20 digits).
func TestNegotiateBounds(t *testing.T) {
	tests := []struct {
		opt      option
		accepted bool
	}{
		{option{"timeout", "255"}, true},
		{option{"timeout", "1"}, true},
		{option{"windowsize", "1"}, true},
		{option{"blksize", "00000000000000001024"}, true}, // 20 digits
		{option{"blksize", "000000000000000001024"}, false},
		{option{"blksize", "10:24"}, false},
		{option{"blksize", "10/24"}, false},
	}
	for _, tt := range tests {
		n := negotiate([]option{tt.opt}, "octet", 10, DefaultMaxBlockSize, DefaultMaxWindowSize)
		if got := len(n.oack) == 1; got != tt.accepted {
			t.Errorf("%s %q: accepted %v (%+v), want %v", tt.opt.name, tt.opt.value, got, n, tt.accepted)
		}
	}
	if n := negotiate([]option{{"windowsize", "1"}, {"timeout", "255"}}, "octet", 10, DefaultMaxBlockSize, DefaultMaxWindowSize); n.window != 1 || n.timeout != 255*time.Second {
		t.Errorf("window %d timeout %s, want 1 and 255s", n.window, n.timeout)
	}
}

// TestPacketBounds: the shortest valid packets (an opcode alone, a DATA of zero
// bytes, the last block of a file whose size is a multiple of the block size,
// an ERROR without a message) parse, and a message that starts with NUL is empty
// both ways.
func TestPacketBounds(t *testing.T) {
	if op, err := peekOpcode([]byte{0, 4}); err != nil || op != opACK {
		t.Errorf("peekOpcode of 2 bytes: %v %v", op, err)
	}
	if block, payload, err := parseData([]byte{0, 3, 0, 7}); err != nil || block != 7 || len(payload) != 0 {
		t.Errorf("empty DATA: block %d, %d bytes, %v", block, len(payload), err)
	}
	if code, msg, err := parseError([]byte{0, 5, 0, 1}); err != nil || code != 1 || msg != "" {
		t.Errorf("ERROR without a message: %d %q %v", code, msg, err)
	}
	if code, msg, err := parseError([]byte{0, 5, 0, 2, 0, 'x', 0}); err != nil || code != 2 || msg != "" {
		t.Errorf("ERROR whose message starts with NUL: %d %q %v", code, msg, err)
	}
	if b := encodeError(1, "\x00hidden"); string(b) != "\x00\x05\x00\x01\x00" {
		t.Errorf("encodeError of a message starting with NUL: % x", b)
	}
}
