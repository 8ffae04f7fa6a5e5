package testkit

import (
	"context"
	"testing"
	"time"
)

// Background runs serve in a goroutine until tb ends. Then it cancels serve's
// context and fails tb unless serve returns nil within 10 s: a server that
// ignores cancellation, or fails on shutdown, is a bug the tests should see.
func Background(tb testing.TB, what string, serve func(ctx context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("%s: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			tb.Errorf("%s did not return after cancel", what)
		}
	})
}
