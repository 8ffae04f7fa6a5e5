-- Secrets (SQLite): encrypted versions and single-use handles. The Secret objects
-- themselves (release rules) are in objects. Times are unix nanoseconds (UTC).

-- One row per version: the value sealed under a per-version data key (DEK), the DEK
-- sealed under the key-encryption key (KEK) named by kek_id. Nothing here is in clear.
CREATE TABLE secret_versions (
	name        TEXT    NOT NULL,
	version     INTEGER NOT NULL,
	kek_id      TEXT    NOT NULL,
	wrapped_dek BLOB    NOT NULL,
	nonce       BLOB    NOT NULL,
	ciphertext  BLOB    NOT NULL,
	created_at  INTEGER NOT NULL,
	created_by  TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (name, version)
) STRICT, WITHOUT ROWID;
CREATE INDEX secret_versions_kek ON secret_versions (kek_id);

-- Which key-encryption key the secrets are keyed with (one row once set). A rotation
-- changes it in the transaction that re-wraps the data keys, so after a crash the
-- server can tell whether the rotation committed (see internal/secrets).
CREATE TABLE secret_kek (
	id         INTEGER PRIMARY KEY CHECK (id = 1),
	kek_id     TEXT    NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;

-- Single-use handles: only the SHA-256 of the id is kept. Redeeming one is a
-- conditional UPDATE of used_at, so two servers never both release it.
CREATE TABLE secret_handles (
	id_hash    TEXT    PRIMARY KEY,
	secret     TEXT    NOT NULL,
	version    INTEGER NOT NULL,
	machine    TEXT    NOT NULL,
	channel    TEXT    NOT NULL,
	expires_at INTEGER NOT NULL,
	used_at    INTEGER,
	created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX secret_handles_expiry ON secret_handles (expires_at);
CREATE INDEX secret_handles_secret ON secret_handles (secret);

-- `kiln audit list --secret NAME`: the entries about one object, without a scan.
CREATE INDEX audit_object ON audit (kind, name, seq);
