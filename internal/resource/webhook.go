package resource

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Webhook limits and defaults.
const (
	DefaultWebhookMaxAttempts    = 8
	DefaultWebhookInitialBackoff = time.Second
	DefaultWebhookMaxBackoff     = 5 * time.Minute
	maxWebhookAttempts           = 100
	maxWebhookURL                = 2048
)

// WebhookSpec sends machines' timeline events to a URL as they happen: each a POST
// of the event's JSON, signed with HMAC-SHA256 under a Secret's value.
type WebhookSpec struct {
	URL string `json:"url"`
	// Events selects which events are sent; empty: all.
	Events WebhookEvents `json:"events,omitempty"`
	// SecretRef names the Secret whose value is the HMAC key (required).
	SecretRef string `json:"secretRef"`
	// Retry bounds the attempts of one delivery; after the last it is dead-lettered.
	Retry WebhookRetry `json:"retry,omitempty"`
}

// WebhookEvents filters the events a webhook receives.
type WebhookEvents struct {
	Types []string `json:"types,omitempty"`
	// MachineSelector is a label selector on the event's machine.
	MachineSelector string `json:"machineSelector,omitempty"`
}

// WebhookRetry is the backoff of one delivery: InitialBackoff doubling up to
// MaxBackoff, MaxAttempts attempts in all.
type WebhookRetry struct {
	MaxAttempts    int    `json:"maxAttempts,omitempty"`
	InitialBackoff string `json:"initialBackoff,omitempty"`
	MaxBackoff     string `json:"maxBackoff,omitempty"`
}

func (s *WebhookSpec) Validate() error {
	if s.URL == "" {
		return fmt.Errorf("spec.url: required")
	}
	u, err := url.Parse(s.URL)
	if err != nil || len(s.URL) > maxWebhookURL || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return fmt.Errorf("spec.url: %q is not an http or https URL without credentials", truncate(s.URL, 80))
	}
	if s.SecretRef == "" {
		return fmt.Errorf("spec.secretRef: required (the Secret whose value signs the deliveries)")
	}
	if ValidateName(s.SecretRef) != nil {
		return fmt.Errorf("spec.secretRef: %q is not a secret name", s.SecretRef)
	}
	for i, t := range s.Events.Types {
		if t == "" || len(t) > 64 || strings.ContainsAny(t, " ,\t\n") {
			return fmt.Errorf("spec.events.types[%d]: %q is not an event type", i, truncate(t, 80))
		}
	}
	if _, err := ParseSelector(s.Events.MachineSelector); err != nil {
		return fmt.Errorf("spec.events.machineSelector: %v", err)
	}
	if n := s.Retry.MaxAttempts; n < 0 || n > maxWebhookAttempts {
		return fmt.Errorf("spec.retry.maxAttempts: %d is not between 1 and %d", n, maxWebhookAttempts)
	}
	if err := durationOK("spec.retry.initialBackoff", s.Retry.InitialBackoff); err != nil {
		return err
	}
	return durationOK("spec.retry.maxBackoff", s.Retry.MaxBackoff)
}

// Backoff returns the retry policy with defaults filled in.
func (r WebhookRetry) Backoff() (attempts int, initial, most time.Duration) {
	attempts, initial, most = r.MaxAttempts, DefaultWebhookInitialBackoff, DefaultWebhookMaxBackoff
	if attempts <= 0 {
		attempts = DefaultWebhookMaxAttempts
	}
	if d, err := time.ParseDuration(r.InitialBackoff); err == nil && d > 0 {
		initial = d
	}
	if d, err := time.ParseDuration(r.MaxBackoff); err == nil && d > 0 {
		most = d
	}
	return attempts, initial, max(most, initial)
}
