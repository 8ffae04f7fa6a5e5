package webhook

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestTwoReplicasOnPostgres: two workers (two replicas, each its own store on
// one PostgreSQL database) deliver a webhook's events once each, in order; when
// the one holding the lease stops, the other takes over after the lease and goes
// on from the stored cursor.
func TestTwoReplicasOnPostgres(t *testing.T) {
	url := pgtest.NewDatabase(t)
	rc := newReceiver(t, nil)
	pol, err := boot.ParseSourcePolicy([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: testkit.OpenPostgres(t, url)}
	e.addHook(t, "h", resource.WebhookSpec{URL: rc.URL, SecretRef: "k"})
	start := func(owner string) (stop func()) {
		st := testkit.OpenPostgres(t, url)
		w := &Worker{Store: st, State: st.(store.WebhookState), Owner: owner, Poll: 20 * time.Millisecond, Lease: 500 * time.Millisecond,
			Client: pol.DirectClient(5 * time.Second), Key: func(context.Context, string, string) ([]byte, error) { return testKey, nil }}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = w.Run(ctx) }()
		var once bool
		stop = func() {
			if !once {
				once = true
				cancel()
				<-done
			}
		}
		t.Cleanup(stop)
		return stop
	}
	stopA := start("replica-a")
	e.waitClaimed(t, "h")
	start("replica-b")
	for range 5 {
		e.event(t, "web-1", "dhcp")
	}
	rc.waitAccepted(t, 5)
	e.waitCursor(t, "h", 5)
	stopA()
	for range 5 {
		e.event(t, "web-1", "dhcp")
	}
	rc.waitAccepted(t, 10)
	time.Sleep(300 * time.Millisecond)
	acc, _, bad := rc.snapshot()
	if fmt.Sprint(acc) != "[1 2 3 4 5 6 7 8 9 10]" || bad != 0 {
		t.Errorf("accepted %v (%d bad); want 1..10 once each, in order", acc, bad)
	}
}
