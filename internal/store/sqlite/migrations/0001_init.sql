-- Kiln's inventory schema (SQLite). Times are unix nanoseconds (UTC).

CREATE TABLE objects (
	kind             TEXT    NOT NULL,
	name             TEXT    NOT NULL,
	labels           TEXT    NOT NULL DEFAULT '{}', -- JSON object
	spec             TEXT    NOT NULL DEFAULT '',   -- JSON, '' when absent
	status           TEXT    NOT NULL DEFAULT '',   -- JSON, '' when absent
	resource_version INTEGER NOT NULL,
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL,
	PRIMARY KEY (kind, name)
) STRICT;

-- Unique keys (a machine's MACs): the DHCP hot path looks objects up by them.
CREATE TABLE object_keys (
	kind TEXT NOT NULL,
	key  TEXT NOT NULL,
	name TEXT NOT NULL,
	PRIMARY KEY (kind, key),
	FOREIGN KEY (kind, name) REFERENCES objects (kind, name) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
CREATE INDEX object_keys_owner ON object_keys (kind, name);

-- The audit hash chain; its head is recorded apart from the entries, in meta.
CREATE TABLE audit (
	seq       INTEGER PRIMARY KEY,
	time      INTEGER NOT NULL,
	actor     TEXT    NOT NULL,
	action    TEXT    NOT NULL,
	kind      TEXT    NOT NULL,
	name      TEXT    NOT NULL,
	summary   TEXT    NOT NULL,
	prev_hash TEXT    NOT NULL,
	hash      TEXT    NOT NULL
) STRICT;

CREATE TABLE meta (
	id         INTEGER PRIMARY KEY CHECK (id = 1),
	audit_seq  INTEGER NOT NULL,
	audit_hash TEXT    NOT NULL
) STRICT;
INSERT INTO meta (id, audit_seq, audit_hash) VALUES (1, 0, '');

CREATE TABLE events (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	machine TEXT    NOT NULL,
	time    INTEGER NOT NULL,
	type    TEXT    NOT NULL,
	message TEXT    NOT NULL
) STRICT;
CREATE INDEX events_machine ON events (machine, id);

CREATE TABLE api_tokens (
	id         TEXT    PRIMARY KEY,
	name       TEXT    NOT NULL,
	role       TEXT    NOT NULL,
	hash       TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	revoked_at INTEGER
) STRICT;
