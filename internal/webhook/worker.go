package webhook

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Defaults of Worker.
const (
	DefaultPoll  = time.Second
	DefaultLease = 30 * time.Second
	// keyReload: a rotated signing key is picked up within this long.
	keyReload = 5 * time.Minute
	batch     = 100
)

// Worker delivers the events of every Webhook object.
type Worker struct {
	Store store.Store
	State store.WebhookState
	// Key returns the HMAC key of a webhook (the value of its Secret).
	Key func(ctx context.Context, webhook, secret string) ([]byte, error)
	// Client makes the deliveries; it must enforce the outgoing allow-list
	// (boot.SourcePolicy.DirectClient).
	Client *http.Client
	// Owner names this replica in the delivery leases.
	Owner  string
	Logger *slog.Logger
	// Notify (may be nil) wakes the worker at local commits; Poll is how often it
	// looks otherwise (other replicas' events, new webhooks).
	Notify store.CommitNotifier
	Poll   time.Duration
	Lease  time.Duration
}

func (w *Worker) poll() time.Duration  { return cmp.Or(w.Poll, DefaultPoll) }
func (w *Worker) lease() time.Duration { return cmp.Or(w.Lease, DefaultLease) }
func (w *Worker) log() *slog.Logger    { return cmp.Or(w.Logger, slog.New(slog.DiscardHandler)) }

// Run delivers until ctx ends: one goroutine per webhook, restarted when its
// object changes, stopped (and its cursor forgotten) when it is deleted.
func (w *Worker) Run(ctx context.Context) error {
	type running struct {
		rv     string
		cancel context.CancelFunc
	}
	hooks := map[string]running{}
	var wg sync.WaitGroup
	defer func() {
		for _, r := range hooks {
			r.cancel()
		}
		wg.Wait()
	}()
	tick := time.NewTicker(w.poll())
	defer tick.Stop()
	for {
		var objs []*resource.Object
		err := w.Store.View(ctx, func(tx store.Tx) error {
			var err error
			objs, _, err = tx.List(ctx, "Webhook", store.ListOptions{})
			return err
		})
		if err != nil && ctx.Err() == nil {
			w.log().Warn("webhooks: list", "err", err)
		}
		if err == nil {
			seen := map[string]bool{}
			for _, o := range objs {
				name := o.Metadata.Name
				seen[name] = true
				if r, ok := hooks[name]; ok && r.rv == o.Metadata.ResourceVersion {
					continue
				} else if ok {
					r.cancel() // changed: start again with the new spec, at the stored cursor
				}
				spec, err := resource.Typed[resource.WebhookSpec](o)
				if err != nil {
					w.log().Warn("webhooks: read spec", "webhook", name, "err", err)
					continue
				}
				hctx, cancel := context.WithCancel(ctx)
				hooks[name] = running{rv: o.Metadata.ResourceVersion, cancel: cancel}
				wg.Go(func() { w.deliverLoop(hctx, name, spec) })
			}
			for name, r := range hooks {
				if !seen[name] {
					r.cancel()
					delete(hooks, name)
					if err := w.State.ForgetWebhook(ctx, name); err != nil && ctx.Err() == nil {
						w.log().Warn("webhooks: forget a deleted webhook", "webhook", name, "err", err)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// deliverLoop delivers one webhook's events in order while this replica holds
// its lease.
func (w *Worker) deliverLoop(ctx context.Context, name string, spec *resource.WebhookSpec) {
	sel, _ := resource.ParseSelector(spec.Events.MachineSelector) // validated at apply
	h := &hook{w: w, name: name, spec: spec, sel: sel}
	for ctx.Err() == nil {
		var wake <-chan struct{}
		if w.Notify != nil {
			wake = w.Notify.Committed()
		}
		more, err := h.round(ctx)
		if err != nil && ctx.Err() == nil {
			w.log().Warn("webhook delivery", "webhook", name, "err", err)
		}
		if more {
			continue
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-time.After(w.poll()):
		}
	}
}

type hook struct {
	w     *Worker
	name  string
	spec  *resource.WebhookSpec
	sel   resource.Selector
	key   []byte
	keyAt time.Time
	// cursor and leaseUntil are what the last claim or advance stored; nextClaim
	// is when to try again after another replica held the lease. An idle webhook
	// then takes the store's write lock about once per half lease, not per poll.
	cursor     int64
	leaseUntil time.Time
	nextClaim  time.Time
}

// round claims the lease, delivers a batch of events after the cursor and
// reports whether more may be waiting.
func (h *hook) round(ctx context.Context) (more bool, err error) {
	var head int64
	err = h.w.Store.View(ctx, func(tx store.Tx) error {
		m, err := tx.StreamMarks(ctx)
		head = m.EventHead
		return err
	})
	if err != nil {
		return false, err
	}
	now := time.Now()
	if now.Before(h.nextClaim) || head <= h.cursor && h.leaseUntil.Sub(now) > h.w.lease()/2 {
		return false, nil // another replica has it, or nothing new while the lease holds
	}
	// A new webhook starts with the events that follow its creation.
	cursor, ok, err := h.w.State.ClaimWebhook(ctx, h.name, h.w.Owner, head, now, now.Add(h.w.lease()))
	if err != nil {
		return false, err
	}
	if !ok {
		h.nextClaim, h.leaseUntil = now.Add(h.w.lease()/2), time.Time{}
		return false, nil
	}
	h.cursor, h.leaseUntil = cursor, now.Add(h.w.lease())
	var evs []store.Event
	labels := map[string]map[string]string{}
	err = h.w.Store.View(ctx, func(tx store.Tx) error {
		var err error
		if evs, err = tx.EventsAfter(ctx, "", cursor, batch); err != nil {
			return err
		}
		if h.sel.Empty() {
			return nil
		}
		for _, e := range evs {
			if _, ok := labels[e.Machine]; ok {
				continue
			}
			m, err := tx.Get(ctx, "Machine", e.Machine)
			if errors.Is(err, store.ErrNotFound) {
				labels[e.Machine] = nil
				continue
			}
			if err != nil {
				return err
			}
			labels[e.Machine] = m.Metadata.Labels
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	skipped, advanced := cursor, cursor
	for _, e := range evs {
		if len(h.spec.Events.Types) > 0 && !slices.Contains(h.spec.Events.Types, e.Type) || !h.sel.Matches(labels[e.Machine]) {
			skipped = e.ID
			continue
		}
		dead, err := h.deliver(ctx, e)
		if err != nil {
			return false, err // lost the lease or stopping: the cursor stays before e
		}
		// Recorded even when Kiln is stopping right now: the receiver has the event,
		// and a restart must not send it again.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		until := time.Now().Add(h.w.lease())
		ok, err := h.w.State.AdvanceWebhook(actx, h.name, h.w.Owner, e.ID, until, dead)
		cancel()
		if err != nil || !ok {
			h.leaseUntil = time.Time{} // claim again next round
			return false, err
		}
		skipped, advanced = e.ID, e.ID
		h.cursor, h.leaseUntil = e.ID, until
	}
	if skipped > advanced {
		until := time.Now().Add(h.w.lease())
		ok, err := h.w.State.AdvanceWebhook(ctx, h.name, h.w.Owner, skipped, until, nil)
		if err != nil || !ok {
			h.leaseUntil = time.Time{}
			return false, err
		}
		h.cursor, h.leaseUntil = skipped, until
	}
	return len(evs) == batch, nil
}

var errLostLease = errors.New("another replica took the webhook's delivery over")

// deliver sends one event until it is accepted (nil, nil) or the attempts run out
// (the dead letter to record). An error means stop: the context ended or the
// lease was lost while waiting to retry.
func (h *hook) deliver(ctx context.Context, e store.Event) (*store.WebhookDelivery, error) {
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %d: %w", e.ID, err)
	}
	attempts, backoff, most := h.spec.Retry.Backoff()
	var status int
	var lastErr string
	for attempt := 1; ; attempt++ {
		status, err = h.attempt(ctx, e, body, attempt)
		if err == nil && status >= 200 && status < 300 {
			return nil, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		lastErr = fmt.Sprintf("HTTP %d", status)
		if err != nil {
			lastErr = err.Error()
		}
		h.w.log().Info("webhook delivery failed", "webhook", h.name, "event", e.ID, "attempt", attempt, "of", attempts, "err", lastErr)
		if attempt >= attempts {
			return &store.WebhookDelivery{EventID: e.ID, Type: e.Type, State: "failed", Attempts: attempt, LastStatus: status, LastError: lastErr}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, most)
		// Keep the lease through long retries; give up if another replica has it.
		now := time.Now()
		if _, ok, err := h.w.State.ClaimWebhook(ctx, h.name, h.w.Owner, 0, now, now.Add(h.w.lease()+backoff)); err != nil {
			return nil, err
		} else if !ok {
			return nil, errLostLease
		}
	}
}

// attempt POSTs the event once and returns the answer's status.
func (h *hook) attempt(ctx context.Context, e store.Event, body []byte, n int) (int, error) {
	if h.key == nil || time.Since(h.keyAt) > keyReload {
		key, err := h.w.Key(ctx, h.name, h.spec.SecretRef)
		if err != nil {
			return 0, err
		}
		h.key, h.keyAt = key, time.Now()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.spec.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	ts, sig := Sign(h.key, time.Now(), body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kiln-webhook")
	req.Header.Set(TimestampHeader, ts)
	req.Header.Set(SignatureHeader, sig)
	req.Header.Set(EventIDHeader, strconv.FormatInt(e.ID, 10))
	req.Header.Set(WebhookHeader, h.name)
	req.Header.Set(AttemptHeader, strconv.Itoa(n))
	resp, err := h.w.Client.Do(req)
	if err != nil {
		// Not the *url.Error's text: the URL may carry a credential (chat webhooks do).
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("POST to webhook %s: %w", h.name, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}
