package watch

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// MaxLineBytes bounds one line of a stream a Decoder reads (an object's JSON).
const MaxLineBytes = 4 << 20

// Received is one message read from a stream.
type Received struct {
	ID    string // the stream's last event id after this message (may be carried over)
	Event string // "message" when the stream named none
	Data  string
}

// Decoder reads Server-Sent Events (the WHATWG HTML "event stream" format) as
// Kiln and other servers write them: fields id, event, data (lines joined with
// \n), retry; comments and unknown fields are skipped.
type Decoder struct {
	sc     *bufio.Scanner
	lastID string
	retry  int
}

// NewDecoder reads from r.
func NewDecoder(r io.Reader) *Decoder {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLineBytes)
	sc.Split(scanLines)
	return &Decoder{sc: sc}
}

// LastID is the last event id the stream set (what a reconnect sends as
// Last-Event-ID), also by a message without data.
func (d *Decoder) LastID() string { return d.lastID }

// Retry is the reconnection delay in milliseconds the stream asked for (0: none).
func (d *Decoder) Retry() int { return d.retry }

// Next returns the next message with data; io.EOF at the end of the stream.
func (d *Decoder) Next() (Received, error) {
	var event string
	var data bytes.Buffer
	hasData := false
	for d.sc.Scan() {
		line := d.sc.Bytes()
		if len(line) == 0 { // dispatch
			if !hasData {
				event = ""
				continue
			}
			msg := Received{ID: d.lastID, Event: event, Data: data.String()}
			if msg.Event == "" {
				msg.Event = "message"
			}
			return msg, nil
		}
		if line[0] == ':' {
			continue // a comment: keepalive
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			event = string(value)
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 { // the spec ignores an id holding NUL
				d.lastID = string(value)
			}
		case "retry":
			if n, err := strconv.Atoi(string(value)); err == nil && n >= 0 {
				d.retry = n
			}
		}
	}
	if err := d.sc.Err(); err != nil {
		return Received{}, fmt.Errorf("read event stream: %w", err)
	}
	return Received{}, io.EOF
}

// scanLines splits at \n, \r\n or \r (the three line ends the format allows).
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	for i, c := range data {
		switch c {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil // a \n may follow
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
