package enroll

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// TestPollOverlongID: anyone can poll any request id. A 2,000-character id is
// answered with at most its first 64 characters in the refusal (and so in the
// audit entry), whether the poll is refused by the handler (a body that is not
// JSON) or by the lookup (a well-formed, channel-bound poll of a request that
// cannot exist); nothing is stored but the audit entries.
func TestPollOverlongID(t *testing.T) {
	e := newEnv(t)
	id := strings.Repeat("a", 2000)
	before := e.count(enrollmentKind)

	conn, _ := e.pollConn()
	c := pollClient(conn)
	code, body := e.post(c, agentwire.EnrollRequestPath(id), []byte("not json"))
	c.CloseIdleConnections()
	msg := errorText(body)
	if code != http.StatusBadRequest || !strings.HasPrefix(msg, "enrollment request "+id[:64]) || !strings.Contains(msg, ": poll: ") || strings.Contains(msg, id[:65]) {
		t.Errorf("a malformed poll of a 2,000-character id: %d %q", code, msg)
	}

	conn, cb := e.pollConn()
	csr, err := agentwire.ChannelBoundCSR(newKey(t), cb)
	if err != nil {
		t.Fatal(err)
	}
	code, body = e.pollWith(conn, id, csr)
	if msg := errorText(body); code != http.StatusNotFound || !strings.Contains(msg, id[:64]) || strings.Contains(msg, id[:65]) {
		t.Errorf("a channel-bound poll of a 2,000-character id: %d %q", code, msg)
	}

	e.srv.FlushRefusals(e.ctx)
	entries := e.auditEntries("enroll-poll-refused")
	if len(entries) != 2 {
		t.Errorf("%d enroll-poll-refused audit entries, want 2", len(entries))
	}
	for _, a := range entries {
		if strings.Contains(a.Summary, id[:65]) {
			t.Errorf("audit entry with more than 64 characters of the id: %.120s", a.Summary)
		}
	}
	if n := e.count(enrollmentKind); n != before {
		t.Errorf("%d enrollment requests after the polls, want %d", n, before)
	}
}

// pollClient sends every request over conn.
func pollClient(conn net.Conn) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialTLSContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}}
}
