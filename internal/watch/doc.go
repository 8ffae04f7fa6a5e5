// Package watch streams Kiln's event log and object change log to many watchers at
// once (GET /api/v1/events?watch=1, GET /api/v1/{kind}?watch=1) as Server-Sent
// Events.
//
// The store is the source of truth and the order: every event and every object
// write has a sequence number from the database, the same on every replica. One
// Broker per log and per process reads the log after the newest sequence it has
// seen, when this process commits (store.CommitNotifier) and every poll interval
// (for what other replicas wrote), and hands each message to every watcher whose
// filter matches. A watcher that resumes from an older sequence first reads the
// gap from the store, then takes the live messages: nothing is lost or repeated
// across a reconnect, a restart or a change of replica. A watcher whose buffer
// fills is dropped, never waited for: the client resumes from the last id it got.
package watch
