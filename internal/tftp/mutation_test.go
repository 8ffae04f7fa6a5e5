package tftp

import (
	"errors"
	"testing"
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
