-- metadata.annotations get their own column. Schema 4 kept them in the labels
-- column under the key "@annotations" (a JSON string holding the JSON object), a
-- key no label can have; this moves that entry out of labels, in objects and in the
-- change log, and makes the trigger copy the new column into the log.
--
-- The trigger is dropped first so that moving the entry does not log a change for
-- every annotated object (nothing about the objects changes). The labels it
-- rewrites are jsonb's text form ({"k": "v"}), which the store reads as any JSON.
DROP TRIGGER objects_changed ON objects;

ALTER TABLE objects ADD COLUMN annotations TEXT NOT NULL DEFAULT '{}'; -- JSON object
ALTER TABLE changes ADD COLUMN annotations TEXT NOT NULL DEFAULT '{}';

UPDATE objects SET annotations = labels::jsonb ->> '@annotations',
	labels = (labels::jsonb - '@annotations')::text
	WHERE jsonb_typeof(labels::jsonb -> '@annotations') = 'string';
UPDATE changes SET annotations = labels::jsonb ->> '@annotations',
	labels = (labels::jsonb - '@annotations')::text
	WHERE jsonb_typeof(labels::jsonb -> '@annotations') = 'string';

CREATE OR REPLACE FUNCTION kiln_object_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' AND OLD.kind = 'Lease' OR TG_OP <> 'DELETE' AND NEW.kind = 'Lease' THEN
		RETURN NULL; -- an AFTER trigger's result is ignored
	END IF;
	IF TG_OP = 'DELETE' THEN
		INSERT INTO changes (kind, name, type, labels, annotations, spec, status, resource_version, created_at, updated_at)
		VALUES (OLD.kind, OLD.name, 'DELETED', OLD.labels, OLD.annotations, OLD.spec, OLD.status, OLD.resource_version, OLD.created_at, OLD.updated_at);
		RETURN OLD;
	END IF;
	INSERT INTO changes (kind, name, type, labels, annotations, spec, status, resource_version, created_at, updated_at)
	VALUES (NEW.kind, NEW.name, CASE TG_OP WHEN 'INSERT' THEN 'ADDED' ELSE 'MODIFIED' END,
		NEW.labels, NEW.annotations, NEW.spec, NEW.status, NEW.resource_version, NEW.created_at, NEW.updated_at);
	RETURN NEW;
END
$$;
CREATE TRIGGER objects_changed AFTER INSERT OR UPDATE OR DELETE ON objects
	FOR EACH ROW EXECUTE FUNCTION kiln_object_changed();
