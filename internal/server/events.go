package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/internal/store"
)

// eventSink writes timeline events off the hot path: protocol handlers (DHCP) hand an
// event over without waiting, and one goroutine writes them in batches, one
// transaction per batch. When the queue is full events are dropped and counted rather
// than slowing a boot storm down.
type eventSink struct {
	st      store.Store
	log     *slog.Logger
	q       chan store.Event
	dropped prometheus.Counter
}

func newEventSink(st store.Store, log *slog.Logger, reg *prometheus.Registry) *eventSink {
	d := prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_events_dropped_total", Help: "Timeline events dropped because the writer fell behind."})
	reg.MustRegister(d)
	return &eventSink{st: st, log: log, q: make(chan store.Event, 8192), dropped: d}
}

// Add queues an event; it never blocks.
func (s *eventSink) Add(e store.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	select {
	case s.q <- e:
	default:
		s.dropped.Inc()
	}
}

// run writes queued events until ctx ends, then drains what is left.
func (s *eventSink) run(ctx context.Context) error {
	batch := make([]store.Event, 0, 256)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := s.st.Update(wctx, func(tx store.Tx) error {
			for i := range batch {
				if err := tx.AddEvent(wctx, &batch[i]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			s.log.Warn("write timeline events", "count", len(batch), "err", err)
			s.dropped.Add(float64(len(batch)))
		}
		batch = batch[:0]
	}
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case e := <-s.q:
					batch = append(batch, e)
				default:
					flush()
					return nil
				}
			}
		case e := <-s.q:
			batch = append(batch, e)
		drain:
			for len(batch) < cap(batch) {
				select {
				case e := <-s.q:
					batch = append(batch, e)
				default:
					break drain
				}
			}
			flush()
		}
	}
}
