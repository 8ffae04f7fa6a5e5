package store_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/store/sqlite"
	"github.com/kilnhq/kiln/internal/testkit"
)

// annotationsSince is the first schema with an annotations column; before it
// (schema 4) Kiln kept an object's annotations in its labels column under the key
// "@annotations", a JSON string holding the JSON object.
const annotationsSince = 5

// v4Annotations are written in schema 4's form: one needs JSON escapes (Go's
// encoder writes '<' as \u003c), one is a JSON document itself.
var v4Annotations = map[string]string{
	"note":              "line 1\n\"line 2\" <b>",
	"example.com/owner": `{"team":"infra"}`,
}

// v4LabelsColumn is the labels column schema 4's Kiln wrote for labels and
// annotations.
func v4LabelsColumn(t *testing.T, labels, annotations map[string]string) string {
	t.Helper()
	a, err := json.Marshal(annotations)
	if err != nil {
		t.Fatal(err)
	}
	m := maps.Clone(labels)
	m["@annotations"] = string(a)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// annotateV4 gives machine web-1 of a schema 4 database annotations the way
// schema 4's store wrote them (its trigger logs the update too), and returns how
// many changes the log then holds.
func annotateV4(t *testing.T, db *sql.DB, rebind func(string) string) int {
	t.Helper()
	col := v4LabelsColumn(t, map[string]string{"role": "web"}, v4Annotations)
	res, err := db.Exec(rebind(`UPDATE objects SET labels = ?, resource_version = resource_version + 1
		WHERE kind = 'Machine' AND name = 'web-1'`), col)
	if err != nil {
		t.Fatalf("annotate web-1 in the v4 form: %v", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("annotate web-1 in the v4 form: %d rows", n)
	}
	return countChanges(t, db)
}

func countChanges(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM changes`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkAnnotationsMigrated checks that web-1 reads back with the annotations and
// labels it had under schema 4, that no labels column (objects or change log)
// still holds the "@annotations" entry, that moving it logged no change, and that
// the newest change of web-1 carries the annotations too.
func checkAnnotationsMigrated(t *testing.T, st store.Store, db *sql.DB, changesBefore int) {
	t.Helper()
	ctx := context.Background()
	web1, err := (&inventory.Service{Store: st}).Get(ctx, "Machine", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(web1.Metadata.Annotations, v4Annotations) {
		t.Errorf("web-1 annotations after the migration: %q, want %q", web1.Metadata.Annotations, v4Annotations)
	}
	if !maps.Equal(web1.Metadata.Labels, map[string]string{"role": "web"}) {
		t.Errorf("web-1 labels after the migration: %q, want only role=web", web1.Metadata.Labels)
	}
	for _, table := range []string{"objects", "changes"} {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM ` + table + ` WHERE labels LIKE '%@annotations%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d rows of %s still carry @annotations in labels", n, table)
		}
	}
	if got := countChanges(t, db); got != changesBefore {
		t.Errorf("the change log holds %d changes after the migration, %d before: moving annotations logged changes", got, changesBefore)
	}
	var last *store.Change
	err = st.View(ctx, func(tx store.Tx) error {
		cs, err := tx.ChangesAfter(ctx, "Machine", 0, 1000)
		for i := range cs {
			if cs[i].Object.Metadata.Name == "web-1" {
				last = &cs[i]
			}
		}
		return err
	})
	if err != nil || last == nil {
		t.Fatalf("changes of web-1: %v, %v", last, err)
	}
	if !maps.Equal(last.Object.Metadata.Annotations, v4Annotations) || last.Object.Metadata.Labels["@annotations"] != "" {
		t.Errorf("web-1's newest change: labels %q annotations %q, want annotations %q", last.Object.Metadata.Labels, last.Object.Metadata.Annotations, v4Annotations)
	}
}

// TestUpgradeAnnotationsSQLite migrates a schema 4 SQLite database holding an
// annotated object.
func TestUpgradeAnnotationsSQLite(t *testing.T) {
	if sqlite.LatestSchemaVersion() < annotationsSince {
		t.Skip("no annotations column")
	}
	dir := copyFixture(t, filepath.Join(fixtureDir, "sqlite-v4.db"))
	path := filepath.Join(dir, sqlite.FileName)
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	before := annotateV4(t, db, func(s string) string { return s })
	st := testkit.OpenSQLite(t, dir)
	checkAnnotationsMigrated(t, st, db, before)
}

// TestUpgradeAnnotationsPostgres does what TestUpgradeAnnotationsSQLite does
// with the PostgreSQL dump of schema 4.
func TestUpgradeAnnotationsPostgres(t *testing.T) {
	testkit.NeedTool(t, "psql", "postgresql-client")
	url := pgtest.NewDatabase(t)
	loadDump(t, url, filepath.Join(fixtureDir, "postgres-v4.sql"))
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	before := annotateV4(t, db, func(s string) string { return strings.ReplaceAll(s, "?", "$1") })
	st := testkit.OpenPostgres(t, url)
	checkAnnotationsMigrated(t, st, db, before)
}
