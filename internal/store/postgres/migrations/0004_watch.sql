-- The change log that watches (GET /api/v1/{kind}?watch=1) and webhooks read: one
-- row per committed write of an object, in commit order (writers are serialized by
-- the advisory lock, so identity values are handed out in commit order too),
-- holding the object as written (as it was, for a delete). A trigger writes it, so
-- that no write path (CreateBatch's multi-row INSERT, a cascade) can miss it.
-- Leases are left out: DHCP rewrites them at every packet.
CREATE TABLE changes (
	seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	kind             TEXT COLLATE "C" NOT NULL,
	name             TEXT COLLATE "C" NOT NULL,
	type             TEXT   NOT NULL, -- ADDED, MODIFIED, DELETED
	labels           TEXT   NOT NULL,
	spec             TEXT   NOT NULL,
	status           TEXT   NOT NULL,
	resource_version BIGINT NOT NULL,
	created_at       BIGINT NOT NULL,
	updated_at       BIGINT NOT NULL
);
CREATE INDEX changes_kind ON changes (kind, seq);

CREATE FUNCTION kiln_object_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' AND OLD.kind = 'Lease' OR TG_OP <> 'DELETE' AND NEW.kind = 'Lease' THEN
		RETURN NULL; -- an AFTER trigger's result is ignored
	END IF;
	IF TG_OP = 'DELETE' THEN
		INSERT INTO changes (kind, name, type, labels, spec, status, resource_version, created_at, updated_at)
		VALUES (OLD.kind, OLD.name, 'DELETED', OLD.labels, OLD.spec, OLD.status, OLD.resource_version, OLD.created_at, OLD.updated_at);
		RETURN OLD;
	END IF;
	INSERT INTO changes (kind, name, type, labels, spec, status, resource_version, created_at, updated_at)
	VALUES (NEW.kind, NEW.name, CASE TG_OP WHEN 'INSERT' THEN 'ADDED' ELSE 'MODIFIED' END,
		NEW.labels, NEW.spec, NEW.status, NEW.resource_version, NEW.created_at, NEW.updated_at);
	RETURN NEW;
END
$$;
CREATE TRIGGER objects_changed AFTER INSERT OR UPDATE OR DELETE ON objects
	FOR EACH ROW EXECUTE FUNCTION kiln_object_changed();

-- The newest sequence retention removed from each log: a watch resuming from before
-- it may have missed something and is answered 410 Gone (the client lists again).
ALTER TABLE meta ADD COLUMN events_floor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE meta ADD COLUMN changes_floor BIGINT NOT NULL DEFAULT 0;

-- Webhook delivery: each webhook's cursor in the event log, and the
-- deliveries that failed for good (the dead-letter list).
CREATE TABLE webhook_cursors (
	name        TEXT COLLATE "C" PRIMARY KEY,
	seq         BIGINT NOT NULL, -- the newest event handled (delivered, dead-lettered or skipped)
	owner       TEXT    NOT NULL, -- the replica delivering, while lease_until is ahead
	lease_until BIGINT NOT NULL,
	updated_at  BIGINT NOT NULL
);
CREATE TABLE webhook_deliveries (
	id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	webhook     TEXT COLLATE "C" NOT NULL,
	seq         BIGINT NOT NULL, -- the event's id
	type        TEXT   NOT NULL,
	state       TEXT   NOT NULL, -- delivered, failed
	attempts    INTEGER NOT NULL,
	last_status INTEGER NOT NULL,
	last_error  TEXT   NOT NULL,
	time        BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook, id);
