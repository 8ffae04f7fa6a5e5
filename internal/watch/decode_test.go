package watch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

func TestDecoder(t *testing.T) {
	in := "retry: 1000\n\n: keepalive\n\nid: 7\nevent: ADDED\ndata: {\"a\":1}\n\n" +
		"id: 9\n\n" + // id only: no message, but the last id moves
		"data: one\r\ndata: two\r\n\r\n" +
		"event: x\rdata: y\r\r" +
		"id: 10\nevent: partial\ndata: cut off" // no blank line: not dispatched
	d := NewDecoder(strings.NewReader(in))
	var got []string
	for {
		m, err := d.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s|%s|%s", m.ID, m.Event, m.Data))
	}
	want := []string{`7|ADDED|{"a":1}`, "9|message|one\ntwo", "9|x|y"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("decoded %q; want %q", got, want)
	}
	if d.Retry() != 1000 || d.LastID() != "10" {
		t.Errorf("retry %d, last id %q; want 1000, 10", d.Retry(), d.LastID())
	}
}

// FuzzDecoder: any input decodes without panic; every message's data is what a
// data field carried, and an over-long line is an error, not memory.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte("id: 1\nevent: event\ndata: {\"id\":1}\n\n"))
	f.Add([]byte(": keepalive\r\n\r\nid: 2\r\n\r\n"))
	f.Add([]byte("data\ndata:\ndata: x\n\nretry: -1\nid: a\x00b\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := NewDecoder(bytes.NewReader(b))
		for range len(b) + 1 {
			m, err := d.Next()
			if err != nil {
				return
			}
			if len(m.Data) > len(b) || strings.ContainsRune(m.ID, 0) {
				t.Fatalf("message %+v from %d bytes", m, len(b))
			}
		}
		t.Fatalf("more messages than input bytes")
	})
}

// TestStreamRoundTrip: what Stream writes, Decoder reads: the first messages
// without ids, the start id, then live messages with their ids.
func TestStreamRoundTrip(t *testing.T) {
	st := testkit.OpenSQLite(t, filepath.Join(t.TempDir(), "data"))
	b := startBroker(t, st, EventLog{Store: st}, Options{Poll: time.Hour})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wt, err := b.Watch(r.Context(), 0, Filter{})
		if err != nil {
			t.Error(err)
			return
		}
		defer wt.Close()
		first := []Message{{Type: "ADDED", Data: []byte(`{"x":1}`)}}
		_ = Stream(r.Context(), w, wt, first, 0, 20*time.Millisecond)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	d := NewDecoder(resp.Body)
	m, err := d.Next()
	if err != nil || m.Event != "ADDED" || m.ID != "" || m.Data != `{"x":1}` {
		t.Fatalf("first: %+v, %v", m, err)
	}
	time.Sleep(50 * time.Millisecond) // a keepalive or two go by
	addEvents(t, st, "web-1", 1)
	m, err = d.Next()
	if err != nil || m.Event != "event" || m.ID != "1" || !strings.Contains(m.Data, `"machine":"web-1"`) {
		t.Fatalf("live: %+v, %v", m, err)
	}
}
