package store

import (
	"context"
	"time"
)

// WebhookDelivery is a delivery of an event to a webhook that failed for good:
// an entry of the webhook's dead-letter list.
type WebhookDelivery struct {
	ID         int64     `json:"id"`
	Webhook    string    `json:"webhook"`
	EventID    int64     `json:"eventID"`
	Type       string    `json:"type"`  // the event's type
	State      string    `json:"state"` // "failed"
	Attempts   int       `json:"attempts"`
	LastStatus int       `json:"lastStatus"` // the last HTTP status (0: no answer)
	LastError  string    `json:"lastError"`
	Time       time.Time `json:"time"`
}

// WebhookState is implemented by stores that keep webhook delivery cursors: the
// newest event each webhook handled, and which replica delivers it (a lease, so
// that replicas do not all deliver the same events and one takes over when the
// holder stops).
type WebhookState interface {
	// ClaimWebhook takes or renews the delivery of a webhook for owner until until,
	// unless another owner's lease runs past now; a webhook without a cursor starts
	// at start. It returns the cursor, and ok false when another owner holds it.
	ClaimWebhook(ctx context.Context, name, owner string, start int64, now, until time.Time) (cursor int64, ok bool, err error)
	// AdvanceWebhook moves the cursor to seq and records d (if not nil) in one
	// transaction, if owner still holds the lease; ok false (nothing written) if not.
	AdvanceWebhook(ctx context.Context, name, owner string, seq int64, until time.Time, d *WebhookDelivery) (ok bool, err error)
	// WebhookDeliveries lists a webhook's recorded deliveries, newest first.
	WebhookDeliveries(ctx context.Context, name string, limit int) ([]WebhookDelivery, error)
	// ForgetWebhook removes a deleted webhook's cursor and deliveries.
	ForgetWebhook(ctx context.Context, name string) error
}
