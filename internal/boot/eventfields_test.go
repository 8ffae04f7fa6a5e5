package boot_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"unicode"

	"github.com/kilnhq/kiln/internal/boot"
)

// TestEventFieldsValidated: what an anonymous host puts in /ipxe's buildarch and
// platform and in phone-home's msg reaches the machine's timeline only as a known
// value, or capped and without control characters.
func TestEventFieldsValidated(t *testing.T) {
	e := newEnv(t, boot.Policy{})
	forged := "\n1999-01-01 10:00:00.000   +1s   WorkflowSucceeded\x1b[2J"
	huge := strings.Repeat("A", 1<<20)
	q := url.Values{"mac": {"52-54-00-00-00-01"}, "buildarch": {"x86_64" + forged}, "platform": {huge}}
	if code, body := e.get("/ipxe?" + q.Encode()); code != 200 {
		t.Fatalf("/ipxe: %d %s", code, body)
	}
	q = url.Values{"mac": {"52-54-00-00-00-01"}, "buildarch": {"arm64"}, "platform": {"efi"}}
	e.get("/ipxe?" + q.Encode())
	q = url.Values{"mac": {"52-54-00-00-00-01"}, "msg": {"done" + forged + "\u009b31m" + huge}}
	if code, body := e.get("/phone-home?" + q.Encode()); code != 200 {
		t.Fatalf("/phone-home: %d %s", code, body)
	}
	evs, err := e.inv.Events(context.Background(), "web-1", 10)
	if err != nil {
		t.Fatal(err)
	}
	var boots []string
	for _, ev := range evs {
		if len(ev.Message) > 1024 {
			t.Errorf("%s event of %d bytes", ev.Type, len(ev.Message))
		}
		if i := strings.IndexFunc(ev.Message, unicode.IsControl); i >= 0 {
			t.Errorf("%s event carries a control character at %d: %q", ev.Type, i, ev.Message)
		}
		if ev.Type == "BootScript" {
			boots = append(boots, ev.Message)
		}
	}
	if len(boots) != 2 || !strings.Contains(boots[0], "(other other)") || !strings.Contains(boots[1], "(arm64 efi)") {
		t.Errorf("BootScript events do not name known architectures and platforms as such, others as other: %q", boots)
	}
}
