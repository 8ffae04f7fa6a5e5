package sqlstore

import "reflect"

// queries holds every statement, rebound for the dialect once at New.
type queries struct {
	getObject, listAll, listPage, lookupKey                   string
	insertObject, objectVersion, updateObject                 string
	deleteObject, deleteObjectAt                              string
	keysOf, keyOwner, insertKey, deleteKey                    string
	listKeys, keysVersion, bumpKeysVersion                    string
	auditHead, insertAudit, setAuditHead, listAudit, allAudit string
	insertEvent, listEvents, allEvents                        string
	eventsAfter, machineEventsAfter, changesAfter             string
	kindChangesAfter, streamMarks                             string
	insertToken, getToken, listTokens, revokeToken            string
}

// all lists every query.
func (q *queries) all() []string {
	v := reflect.ValueOf(q).Elem()
	out := make([]string, 0, v.NumField())
	for i := range v.NumField() {
		out = append(out, v.Field(i).String())
	}
	return out
}

// objectCols are scanned by scanObject, in this order. Annotations without entries
// ("{}", most objects) are read as NULL, which costs List no allocations.
const objectCols = `o.name, o.labels, NULLIF(o.annotations, '{}'), o.spec, o.status, o.resource_version, o.created_at, o.updated_at`

// changeCols are a change's object columns, in scanObject's order.
const changeCols = `c.name, c.labels, NULLIF(c.annotations, '{}'), c.spec, c.status, c.resource_version, c.created_at, c.updated_at`

func newQueries(d *Dialect) *queries {
	r := d.Rebind
	return &queries{
		getObject: r(`SELECT ` + objectCols + ` FROM objects o WHERE o.kind = ? AND o.name = ?`),
		listAll:   r(`SELECT ` + objectCols + ` FROM objects o WHERE o.kind = ? AND o.name > ? ORDER BY o.name`),
		listPage:  r(`SELECT ` + objectCols + ` FROM objects o WHERE o.kind = ? AND o.name > ? ORDER BY o.name LIMIT ?`),
		lookupKey: r(`SELECT ` + objectCols + ` FROM object_keys k JOIN objects o ON o.kind = k.kind AND o.name = k.name
			WHERE k.kind = ? AND k.key = ?`),

		insertObject: r(`INSERT INTO objects (kind, name, labels, annotations, spec, status, resource_version, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (kind, name) DO NOTHING`),
		objectVersion: r(`SELECT resource_version, created_at FROM objects WHERE kind = ? AND name = ?`),
		updateObject: r(`UPDATE objects SET labels = ?, annotations = ?, spec = ?, status = ?, resource_version = ?, updated_at = ?
			WHERE kind = ? AND name = ? AND resource_version = ?`),
		deleteObject:   r(`DELETE FROM objects WHERE kind = ? AND name = ?`),
		deleteObjectAt: r(`DELETE FROM objects WHERE kind = ? AND name = ? AND resource_version = ?`),

		keysOf:    r(`SELECT key FROM object_keys WHERE kind = ? AND name = ?`),
		keyOwner:  r(`SELECT name FROM object_keys WHERE kind = ? AND key = ?`),
		insertKey: r(`INSERT INTO object_keys (kind, key, name) VALUES (?, ?, ?) ON CONFLICT (kind, key) DO NOTHING`),
		deleteKey: r(`DELETE FROM object_keys WHERE kind = ? AND key = ? AND name = ?`),
		// key >= prefix AND key < prefix+U+10FFFF (4 bytes F4 8F BF BF, above any
		// byte of a key) lets the primary key's index serve the prefix.
		listKeys:        r(`SELECT key FROM object_keys WHERE kind = ? AND key >= ? AND key < ? ORDER BY key`),
		keysVersion:     `SELECT keys_version FROM meta WHERE id = 1`,
		bumpKeysVersion: `UPDATE meta SET keys_version = keys_version + 1 WHERE id = 1`,

		auditHead: `SELECT audit_seq, audit_hash FROM meta WHERE id = 1`,
		insertAudit: r(`INSERT INTO audit (seq, time, actor, action, kind, name, summary, prev_hash, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		setAuditHead: r(`UPDATE meta SET audit_seq = ?, audit_hash = ? WHERE id = 1 AND audit_seq = ?`),
		listAudit: r(`SELECT seq, time, actor, action, kind, name, summary, prev_hash, hash FROM audit
			WHERE seq > ? ORDER BY seq LIMIT ?`),
		allAudit: r(`SELECT seq, time, actor, action, kind, name, summary, prev_hash, hash FROM audit
			WHERE seq > ? ORDER BY seq`),

		insertEvent: r(`INSERT INTO events (machine, time, type, message) VALUES (?, ?, ?, ?) RETURNING id`),
		listEvents: r(`SELECT id, machine, time, type, message FROM events
			WHERE machine = ? ORDER BY id DESC LIMIT ?`),
		allEvents: r(`SELECT id, machine, time, type, message FROM events
			WHERE machine = ? ORDER BY id DESC`),

		eventsAfter: r(`SELECT id, machine, time, type, message FROM events
			WHERE id > ? ORDER BY id LIMIT ?`),
		machineEventsAfter: r(`SELECT id, machine, time, type, message FROM events
			WHERE machine = ? AND id > ? ORDER BY id LIMIT ?`),
		changesAfter: r(`SELECT c.seq, c.type, c.kind, ` + changeCols + ` FROM changes c
			WHERE c.seq > ? ORDER BY c.seq LIMIT ?`),
		kindChangesAfter: r(`SELECT c.seq, c.type, c.kind, ` + changeCols + ` FROM changes c
			WHERE c.kind = ? AND c.seq > ? ORDER BY c.seq LIMIT ?`),
		streamMarks: `SELECT (SELECT COALESCE(MAX(id), 0) FROM events), events_floor,
			(SELECT COALESCE(MAX(seq), 0) FROM changes), changes_floor FROM meta WHERE id = 1`,

		insertToken: r(`INSERT INTO api_tokens (id, name, role, hash, created_at, revoked_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`),
		getToken:    r(`SELECT id, name, role, hash, created_at, revoked_at FROM api_tokens WHERE id = ?`),
		listTokens:  `SELECT id, name, role, hash, created_at, revoked_at FROM api_tokens ORDER BY created_at, id`,
		revokeToken: r(`UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`),
	}
}
