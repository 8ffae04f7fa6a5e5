package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/httpjson"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/watch"
)

// DefaultWatchesPerCaller bounds the streams one caller (an API token, a console
// session) holds open at once: a console tab holds one or two.
const DefaultWatchesPerCaller = 32

// Watches are the brokers the watch routes stream from; nil Watches (or a nil
// broker) answers watch=1 with 501.
type Watches struct {
	Events  *watch.Broker // the machines' timelines
	Changes *watch.Broker // the objects' writes
	// PerCaller bounds concurrent watches per caller (0: DefaultWatchesPerCaller).
	PerCaller int
	// Keepalive is the interval of keepalive comments (0: watch.DefaultKeepalive).
	Keepalive time.Duration

	mu     sync.Mutex
	active map[string]int
}

// acquire counts a watch of caller; false when the caller holds the limit.
func (ws *Watches) acquire(caller string) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.active == nil {
		ws.active = map[string]int{}
	}
	if ws.active[caller] >= ws.limit() {
		return false
	}
	ws.active[caller]++
	return true
}

func (ws *Watches) limit() int {
	if ws.PerCaller <= 0 {
		return DefaultWatchesPerCaller
	}
	return ws.PerCaller
}

func (ws *Watches) release(caller string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.active[caller]--; ws.active[caller] <= 0 {
		delete(ws.active, caller)
	}
}

// watching reports whether the request asks for a watch (?watch=1 or true).
func watching(r *http.Request) bool {
	v := r.URL.Query().Get("watch")
	return v == "1" || v == "true"
}

// resumeFrom returns the sequence a watch resumes after: the Last-Event-ID header
// (an EventSource reconnecting) or else ?resourceVersion=N; ok false when neither.
func resumeFrom(r *http.Request) (after int64, ok bool, err error) {
	v, what := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if v == "" {
		v, what = r.URL.Query().Get("resourceVersion"), "resourceVersion"
	}
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("%s: %q is not a resource version (a non-negative integer)", what, v)
	}
	return n, true, nil
}

// EventLogList is a page of the event log of every machine (GET /api/v1/events).
type EventLogList struct {
	Items []store.Event `json:"items"`
	// ResourceVersion is the newest event's id when the page was read: watch from
	// it to continue without a gap.
	ResourceVersion string `json:"resourceVersion"`
}

// eventFilter reads ?machine= and ?type= (comma-separated).
func eventFilter(r *http.Request) (watch.Filter, error) {
	q := r.URL.Query()
	f := watch.Filter{Machine: q.Get("machine")}
	if f.Machine != "" && resource.ValidateName(f.Machine) != nil {
		return f, fmt.Errorf("machine: %q is not a valid name", f.Machine)
	}
	if t := q.Get("type"); t != "" {
		for _, typ := range strings.Split(t, ",") {
			if typ = strings.TrimSpace(typ); typ == "" || len(typ) > 64 {
				return f, fmt.Errorf("type: %q is not a list of event types", t)
			}
			f.Types = append(f.Types, strings.TrimSpace(typ))
		}
	}
	return f, nil
}

// eventLog serves GET /api/v1/events: the event log after resourceVersion (a
// page), or with watch=1 its stream.
func (s *Server) eventLog(w http.ResponseWriter, r *http.Request) {
	f, err := eventFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	after, resume, err := resumeFrom(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if watching(r) {
		var b *watch.Broker
		if s.Watches != nil {
			b = s.Watches.Events
		}
		s.stream(w, r, b, f, after, resume, nil)
		return
	}
	limit, err := intParam(r.URL.Query().Get("limit"), 100, 1, 10000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "limit: "+err.Error())
		return
	}
	var out EventLogList
	err = s.Store.View(r.Context(), func(tx store.Tx) error {
		m, err := tx.StreamMarks(r.Context())
		if err != nil {
			return err
		}
		if resume && after < m.EventFloor {
			return watch.ErrGone
		}
		out.ResourceVersion = strconv.FormatInt(m.EventHead, 10)
		// Read pages until limit matches (a type filter skips rows).
		for cursor := after; len(out.Items) < limit; {
			evs, err := tx.EventsAfter(r.Context(), f.Machine, cursor, limit)
			if err != nil {
				return err
			}
			for _, e := range evs {
				msg := watch.Message{Machine: e.Machine, EventType: e.Type}
				if f.Match(&msg) && len(out.Items) < limit {
					out.Items = append(out.Items, e)
				}
				cursor = e.ID
			}
			if len(evs) < limit {
				break
			}
		}
		return nil
	})
	if errors.Is(err, watch.ErrGone) {
		writeError(w, http.StatusGone, fmt.Sprintf("resourceVersion %d: %v", after, err))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out.Items = httpjson.List(out.Items)
	writeJSON(w, http.StatusOK, out)
}

// watchKind serves GET /api/v1/{kind}?watch=1: without a resource version, the
// objects the selector picks now as ADDED, then every write to such an object.
func (s *Server) watchKind(w http.ResponseWriter, r *http.Request, k *resource.Kind, sel resource.Selector) {
	after, resume, err := resumeFrom(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if k.Name == store.UnloggedKind {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("watch: %s are not watched (DHCP rewrites them at every packet): list them", k.Plural))
		return
	}
	var b *watch.Broker
	if s.Watches != nil {
		b = s.Watches.Changes
	}
	f := watch.Filter{Kind: k.Name, Selector: sel}
	if b == nil {
		s.stream(w, r, b, f, after, resume, nil)
		return
	}
	// The list and the log's head from one snapshot: the watch goes on from there.
	// Under a selector the watch also starts from the names the list selected, to
	// follow objects in and out of the selection. A resumed watch takes the objects
	// that match now, and the first replayed write of each object decides for it
	// (the client's list is older: see watch.Filter.Resumed).
	var first []watch.Message
	err = s.Store.View(r.Context(), func(tx store.Tx) error {
		m, err := tx.StreamMarks(r.Context())
		if err != nil {
			return err
		}
		if resume && sel.Empty() {
			return nil
		}
		if !resume {
			after = m.ChangeHead
		}
		objs, _, err := tx.List(r.Context(), k.Name, store.ListOptions{Selector: sel})
		if err != nil {
			return err
		}
		f.Resumed = resume
		for _, o := range objs {
			f.Selected = append(f.Selected, o.Metadata.Name)
			if resume {
				continue
			}
			data, err := jsonLine(o)
			if err != nil {
				return err
			}
			first = append(first, watch.Message{Type: store.ChangeAdded, Data: data})
		}
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.stream(w, r, b, f, after, true, first)
}

// stream runs one watch: the per-caller limit, 410 for a version retention
// removed, then the Server-Sent Events until the client or the server goes.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, b *watch.Broker, f watch.Filter, after int64, resume bool, first []watch.Message) {
	if b == nil {
		writeError(w, http.StatusNotImplemented, "watches are not served by this server")
		return
	}
	caller := actor(r).ID
	if !s.Watches.acquire(caller) {
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%s holds the most watches allowed at once (%d): close one", caller, s.Watches.limit()))
		return
	}
	defer s.Watches.release(caller)
	if !resume {
		head, err := b.Head(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		after = head
	}
	wt, err := b.Watch(r.Context(), after, f)
	switch {
	case errors.Is(err, watch.ErrGone):
		writeError(w, http.StatusGone, fmt.Sprintf("resourceVersion %d: %v", after, err))
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	defer wt.Close()
	// The server's read timeout would end a long stream: it only reads the request.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	start := after
	if len(first) == 0 && resume && r.Header.Get("Last-Event-ID") != "" {
		start = -1 // the client has it already
	}
	keepalive := s.Watches.Keepalive
	if keepalive <= 0 {
		keepalive = watch.DefaultKeepalive
	}
	err = watch.Stream(r.Context(), w, wt, first, start, keepalive)
	if err != nil && !errors.Is(err, watch.ErrClosed) {
		s.Logger.Info("watch ended", "path", r.URL.Path, "actor", caller, "last", wt.Last(), "err", err)
	}
}

// jsonLine encodes v as one line of JSON, as the list responses encode it.
func jsonLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode a watch message: %w", err)
	}
	return b, nil
}

// WebhookDeliveryList is a webhook's dead-letter list, newest first.
type WebhookDeliveryList struct {
	Items []store.WebhookDelivery `json:"items"`
}

// webhookDeliveries serves GET /api/v1/webhooks/{name}/deliveries: the events that
// could not be delivered after every attempt (failed=1 says so explicitly; only
// failed deliveries are recorded).
func (s *Server) webhookDeliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if f := q.Get("failed"); f != "" && f != "1" && f != "true" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("failed: %q is not 1 or true (only failed deliveries are kept)", f))
		return
	}
	limit, err := intParam(q.Get("limit"), 100, 1, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "limit: "+err.Error())
		return
	}
	name := r.PathValue("name")
	if _, err := s.Inventory.Get(r.Context(), "Webhook", name); err != nil {
		s.fail(w, r, err)
		return
	}
	ws, ok := s.Store.(store.WebhookState)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this store keeps no webhook deliveries")
		return
	}
	items, err := ws.WebhookDeliveries(r.Context(), name, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, WebhookDeliveryList{Items: httpjson.List(items)})
}
