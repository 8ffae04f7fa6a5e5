-- The change log that watches (GET /api/v1/{kind}?watch=1) and webhooks read: one
-- row per committed write of an object, in commit order (writers are serialized),
-- holding the object as written (as it was, for a delete). Triggers write it, so
-- that no write path (CreateBatch's multi-row INSERT, a cascade) can miss it.
-- Leases are left out: DHCP rewrites them at every packet, and logging them halved
-- the leases per second of the DHCP benchmark (BenchmarkDORASQLite).
CREATE TABLE changes (
	seq              INTEGER PRIMARY KEY AUTOINCREMENT,
	kind             TEXT    NOT NULL,
	name             TEXT    NOT NULL,
	type             TEXT    NOT NULL, -- ADDED, MODIFIED, DELETED
	labels           TEXT    NOT NULL,
	spec             TEXT    NOT NULL,
	status           TEXT    NOT NULL,
	resource_version INTEGER NOT NULL,
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX changes_kind ON changes (kind, seq);

CREATE TRIGGER objects_added AFTER INSERT ON objects WHEN NEW.kind <> 'Lease' BEGIN
	INSERT INTO changes (kind, name, type, labels, spec, status, resource_version, created_at, updated_at)
	VALUES (NEW.kind, NEW.name, 'ADDED', NEW.labels, NEW.spec, NEW.status, NEW.resource_version, NEW.created_at, NEW.updated_at);
END;
CREATE TRIGGER objects_modified AFTER UPDATE ON objects WHEN NEW.kind <> 'Lease' BEGIN
	INSERT INTO changes (kind, name, type, labels, spec, status, resource_version, created_at, updated_at)
	VALUES (NEW.kind, NEW.name, 'MODIFIED', NEW.labels, NEW.spec, NEW.status, NEW.resource_version, NEW.created_at, NEW.updated_at);
END;
CREATE TRIGGER objects_deleted AFTER DELETE ON objects WHEN OLD.kind <> 'Lease' BEGIN
	INSERT INTO changes (kind, name, type, labels, spec, status, resource_version, created_at, updated_at)
	VALUES (OLD.kind, OLD.name, 'DELETED', OLD.labels, OLD.spec, OLD.status, OLD.resource_version, OLD.created_at, OLD.updated_at);
END;

-- The newest sequence retention removed from each log: a watch resuming from before
-- it may have missed something and is answered 410 Gone (the client lists again).
ALTER TABLE meta ADD COLUMN events_floor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE meta ADD COLUMN changes_floor INTEGER NOT NULL DEFAULT 0;

-- Webhook delivery: each webhook's cursor in the event log, and the
-- deliveries that failed for good (the dead-letter list).
CREATE TABLE webhook_cursors (
	name        TEXT PRIMARY KEY,
	seq         INTEGER NOT NULL, -- the newest event handled (delivered, dead-lettered or skipped)
	owner       TEXT    NOT NULL, -- the replica delivering, while lease_until is ahead
	lease_until INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL
) STRICT;
CREATE TABLE webhook_deliveries (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	webhook     TEXT    NOT NULL,
	seq         INTEGER NOT NULL, -- the event's id
	type        TEXT    NOT NULL,
	state       TEXT    NOT NULL, -- delivered, failed
	attempts    INTEGER NOT NULL,
	last_status INTEGER NOT NULL,
	last_error  TEXT    NOT NULL,
	time        INTEGER NOT NULL
) STRICT;
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook, id);
