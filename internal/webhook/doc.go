// Package webhook delivers machines' timeline events to the URLs of Webhook
// objects: each event a POST of its JSON (as the event stream carries it),
// signed with HMAC-SHA256 under the webhook's Secret, retried with exponential
// backoff, and dead-lettered after the last attempt.
//
// Delivery reads the store's event log by sequence, as watches do, and stores
// each webhook's cursor: at least once, in order per webhook (an event is not
// sent before the one before it was delivered or dead-lettered), and across
// restarts. Replicas share the work through a lease on each cursor.
//
// Outgoing connections pass an allow-list (boot.SourcePolicy, --webhook-allow):
// by default only public addresses, so that a webhook cannot make Kiln call
// into its own network (SSRF).
package webhook
