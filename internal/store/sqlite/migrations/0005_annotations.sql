-- metadata.annotations get their own column. Schema 4 kept them in the labels
-- column under the key "@annotations" (a JSON string holding the JSON object), a
-- key no label can have; this moves that entry out of labels, in objects and in the
-- change log, and makes the triggers copy the new column into the log.
--
-- The triggers are dropped first so that moving the entry does not log a change
-- for every annotated object (nothing about the objects changes).
DROP TRIGGER objects_added;
DROP TRIGGER objects_modified;
DROP TRIGGER objects_deleted;

ALTER TABLE objects ADD COLUMN annotations TEXT NOT NULL DEFAULT '{}'; -- JSON object
ALTER TABLE changes ADD COLUMN annotations TEXT NOT NULL DEFAULT '{}';

UPDATE objects SET annotations = json_extract(labels, '$."@annotations"'),
	labels = json_remove(labels, '$."@annotations"')
	WHERE json_type(labels, '$."@annotations"') = 'text';
UPDATE changes SET annotations = json_extract(labels, '$."@annotations"'),
	labels = json_remove(labels, '$."@annotations"')
	WHERE json_type(labels, '$."@annotations"') = 'text';

CREATE TRIGGER objects_added AFTER INSERT ON objects WHEN NEW.kind <> 'Lease' BEGIN
	INSERT INTO changes (kind, name, type, labels, annotations, spec, status, resource_version, created_at, updated_at)
	VALUES (NEW.kind, NEW.name, 'ADDED', NEW.labels, NEW.annotations, NEW.spec, NEW.status, NEW.resource_version, NEW.created_at, NEW.updated_at);
END;
CREATE TRIGGER objects_modified AFTER UPDATE ON objects WHEN NEW.kind <> 'Lease' BEGIN
	INSERT INTO changes (kind, name, type, labels, annotations, spec, status, resource_version, created_at, updated_at)
	VALUES (NEW.kind, NEW.name, 'MODIFIED', NEW.labels, NEW.annotations, NEW.spec, NEW.status, NEW.resource_version, NEW.created_at, NEW.updated_at);
END;
CREATE TRIGGER objects_deleted AFTER DELETE ON objects WHEN OLD.kind <> 'Lease' BEGIN
	INSERT INTO changes (kind, name, type, labels, annotations, spec, status, resource_version, created_at, updated_at)
	VALUES (OLD.kind, OLD.name, 'DELETED', OLD.labels, OLD.annotations, OLD.spec, OLD.status, OLD.resource_version, OLD.created_at, OLD.updated_at);
END;
