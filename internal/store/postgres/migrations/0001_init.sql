-- Kiln's inventory schema (PostgreSQL). Times are unix nanoseconds (UTC). Names and
-- keys use the "C" collation: byte order, as in SQLite and Go, whatever the database's.

CREATE TABLE objects (
	kind             TEXT COLLATE "C" NOT NULL,
	name             TEXT COLLATE "C" NOT NULL,
	labels           TEXT   NOT NULL DEFAULT '{}', -- JSON object
	spec             TEXT   NOT NULL DEFAULT '',   -- JSON, '' when absent
	status           TEXT   NOT NULL DEFAULT '',   -- JSON, '' when absent
	resource_version BIGINT NOT NULL,
	created_at       BIGINT NOT NULL,
	updated_at       BIGINT NOT NULL,
	PRIMARY KEY (kind, name)
);

-- Unique keys (a machine's MACs): the DHCP hot path looks objects up by them.
CREATE TABLE object_keys (
	kind TEXT COLLATE "C" NOT NULL,
	key  TEXT COLLATE "C" NOT NULL,
	name TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (kind, key),
	FOREIGN KEY (kind, name) REFERENCES objects (kind, name) ON DELETE CASCADE
);
CREATE INDEX object_keys_owner ON object_keys (kind, name);

-- The audit hash chain; its head is recorded apart from the entries, in meta.
CREATE TABLE audit (
	seq       BIGINT PRIMARY KEY,
	time      BIGINT NOT NULL,
	actor     TEXT   NOT NULL,
	action    TEXT   NOT NULL,
	kind      TEXT   NOT NULL,
	name      TEXT   NOT NULL,
	summary   TEXT   NOT NULL,
	prev_hash TEXT   NOT NULL,
	hash      TEXT   NOT NULL
);

CREATE TABLE meta (
	id         INTEGER PRIMARY KEY CHECK (id = 1),
	audit_seq  BIGINT NOT NULL,
	audit_hash TEXT   NOT NULL
);
INSERT INTO meta (id, audit_seq, audit_hash) VALUES (1, 0, '');

CREATE TABLE events (
	id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	machine TEXT COLLATE "C" NOT NULL,
	time    BIGINT NOT NULL,
	type    TEXT   NOT NULL,
	message TEXT   NOT NULL
);
CREATE INDEX events_machine ON events (machine, id);

CREATE TABLE api_tokens (
	id         TEXT COLLATE "C" PRIMARY KEY,
	name       TEXT   NOT NULL,
	role       TEXT   NOT NULL,
	hash       TEXT   NOT NULL,
	created_at BIGINT NOT NULL,
	revoked_at BIGINT
);
