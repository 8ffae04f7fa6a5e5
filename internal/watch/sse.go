package watch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Stream defaults.
const (
	// DefaultKeepalive: a comment line this often keeps proxies and load
	// balancers from closing an idle stream, and finds clients that left.
	DefaultKeepalive = 15 * time.Second
	// writeTimeout bounds one write to a client: one that does not read is let go.
	writeTimeout = 30 * time.Second
	// retryMillis is the reconnection delay the stream asks EventSource clients for.
	retryMillis = 1000
)

// Stream writes a watch to an HTTP response as Server-Sent Events: first the
// messages of first (a list's objects as ADDED, without ids), then an id-only
// message carrying start (so that a client that got nothing else can resume from
// it) when start >= 0, then the watcher's messages, with a keepalive comment every
// keepalive. It returns when ctx ends, the client goes, or the watcher ends (the
// error says why: ErrDropped, ErrGone, ErrClosed).
func Stream(ctx context.Context, rw http.ResponseWriter, w *Watcher, first []Message, start int64, keepalive time.Duration) error {
	rc := http.NewResponseController(rw)
	h := rw.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	rw.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(rw, 4096)
	// Every write (also bufio's own when a burst fills it) has a deadline ahead.
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(writeTimeout)) }
	flush := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	deadline()
	fmt.Fprintf(bw, "retry: %d\n\n", retryMillis)
	for i := range first {
		writeMessage(bw, &first[i], false)
	}
	if start >= 0 {
		fmt.Fprintf(bw, "id: %d\n\n", start)
	}
	if err := flush(); err != nil {
		return err
	}
	tick := time.NewTicker(max(keepalive, time.Millisecond))
	defer tick.Stop()
	for {
		m, err := w.Next(ctx, tick.C)
		deadline()
		switch {
		case err != nil:
			if errors.Is(err, context.Canceled) {
				return nil
			}
			// Tell an EventSource why; it reconnects with the last id it got.
			fmt.Fprintf(bw, ": %s\n\n", err)
			_ = flush()
			return err
		case m == nil:
			bw.WriteString(": keepalive\n\n")
		default:
			writeMessage(bw, m, true)
			// Flush only when nothing else is ready, so a burst leaves in few writes.
			if w.pendingNow() {
				continue
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
}

func writeMessage(bw *bufio.Writer, m *Message, withID bool) {
	if withID {
		bw.WriteString("id: ")
		bw.WriteString(strconv.FormatInt(m.ID, 10))
		bw.WriteByte('\n')
	}
	bw.WriteString("event: ")
	bw.WriteString(m.Type)
	bw.WriteString("\ndata: ")
	bw.Write(m.Data) // encoding/json output: newlines inside strings are escaped
	bw.WriteString("\n\n")
}
