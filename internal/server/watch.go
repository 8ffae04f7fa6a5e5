package server

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/watch"
	"github.com/kilnhq/kiln/internal/webhook"
)

// DefaultChangeRetentionCount is how many object writes the change log keeps for
// watches to resume over: at a write a second, a day; a client away longer
// lists again (410).
const DefaultChangeRetentionCount = 100_000

// newWatches makes the brokers of the watch routes (one per log) and runs them
// beside the listeners; they stop first at shutdown, so that the streams end and
// do not hold the graceful shutdown up.
func (s *Server) newWatches() *api.Watches {
	notify, _ := s.store.(store.CommitNotifier)
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_watch_dropped_total", Help: "Watchers dropped because they fell too far behind (they resume)."})
	opts := watch.Options{Poll: s.cfg.WatchPoll, Logger: s.log, Dropped: dropped.Inc}
	ws := &api.Watches{
		Events:    watch.NewBroker(watch.EventLog{Store: s.store}, notify, opts),
		Changes:   watch.NewBroker(watch.ChangeLog{Store: s.store}, notify, opts),
		PerCaller: s.cfg.WatchesPerCaller,
	}
	watchers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kiln_watchers", Help: "Watches (event and object streams) open now."},
		func() float64 { return float64(ws.Events.Watchers() + ws.Changes.Watchers()) })
	s.registry.MustRegister(dropped, watchers)
	wctx, cancel := context.WithCancel(context.Background())
	s.stopWatches = cancel
	s.udpServers = append(s.udpServers, func(ctx context.Context) error {
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
		var wg sync.WaitGroup
		for _, b := range []*watch.Broker{ws.Events, ws.Changes} {
			wg.Go(func() { _ = b.Run(wctx) })
		}
		wg.Wait()
		return nil
	})
	return ws
}

// startWebhooks runs the webhook delivery worker beside the listeners.
func (s *Server) startWebhooks() error {
	policy, err := boot.ParseSourcePolicy(s.cfg.WebhookAllow)
	if err != nil {
		return fmt.Errorf("--webhook-allow: %w", err)
	}
	state, ok := s.store.(store.WebhookState)
	if !ok {
		return nil
	}
	notify, _ := s.store.(store.CommitNotifier)
	host, _ := os.Hostname()
	w := &webhook.Worker{
		Store: s.store, State: state, Key: s.secrets.WebhookKey,
		Client: policy.DirectClient(webhookTimeout),
		// A restarted Kiln is the same owner and takes its leases back at once.
		Owner:  host + ":" + s.cfg.DataDir,
		Logger: s.log, Notify: notify,
	}
	s.udpServers = append(s.udpServers, w.Run)
	return nil
}

// webhookTimeout bounds one delivery attempt.
const webhookTimeout = 10 * time.Second
