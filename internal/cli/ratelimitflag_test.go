package cli

import (
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/ratelimit"
)

func TestParseRateLimits(t *testing.T) {
	got, err := parseRateLimits([]string{"enroll=1:10", "artifacts=off"})
	if err != nil {
		t.Fatal(err)
	}
	if got["enroll"] != (ratelimit.Rate{PerSecond: 1, Burst: 10}) || !got["artifacts"].Off() || len(got) != 2 {
		t.Fatalf("got %+v", got)
	}
	for _, bad := range []string{"enroll", "nope=1:2", "enroll=fast", "scripts=1:0"} {
		if _, err := parseRateLimits([]string{bad}); err == nil || !strings.Contains(err.Error(), "--rate-limit") {
			t.Errorf("--rate-limit %q: %v; want an error naming the flag", bad, err)
		}
	}
}
