package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	// The ResponseWriter buffers already (and the connection's writer behind it):
	// a buffer of its own would cost every watcher 4 KiB more.
	bw := &lineWriter{w: rw}
	// Every write (also bufio's own when a burst fills it) has a deadline ahead.
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(writeTimeout)) }
	flush := func() error {
		if bw.err != nil {
			return bw.err
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
			bw.writeString(": keepalive\n\n")
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

// lineWriter writes to the response and keeps the first error (a client gone).
type lineWriter struct {
	w   io.Writer
	err error
}

func (l *lineWriter) Write(b []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	n, err := l.w.Write(b)
	l.err = err
	return n, err
}

func (l *lineWriter) writeString(s string) { _, _ = io.WriteString(l, s) }
func (l *lineWriter) writeByte(c byte)     { _, _ = l.Write([]byte{c}) }

func writeMessage(bw *lineWriter, m *Message, withID bool) {
	if withID {
		bw.writeString("id: ")
		bw.writeString(strconv.FormatInt(m.ID, 10))
		bw.writeByte('\n')
	}
	bw.writeString("event: ")
	bw.writeString(m.Type)
	bw.writeString("\ndata: ")
	bw.Write(m.Data) // encoding/json output: newlines inside strings are escaped
	bw.writeString("\n\n")
}
