package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// After exercising every path that touches a value, no value is found in clear (nor
// base64- or hex-encoded) in the logs, the events, the audit log, the API's listings or
// any file of the data directory (the SQLite database, its WAL, the key file).
func TestNoValueInLogsEventsOrDatabase(t *testing.T) {
	e := newFleet(t)
	const viaAPI = "kiln-TEST-set-over-the-api-5d21"
	values := []string{dbPassword, apiToken, viaAPI}

	var responses bytes.Buffer // what listings and metadata calls answered
	keep := func(code int, body []byte) { responses.Write(body) }

	// Set over the API, as the CLI does.
	body := `{"value":"` + base64.StdEncoding.EncodeToString([]byte(viaAPI)) + `"}`
	if code, b := e.request("PUT", "/api/v1/secrets/via-api/value", strings.NewReader(body), asRole("operator")); code != 200 {
		t.Fatalf("set: %d %s", code, b)
	}
	// Deliveries: inline over mTLS, handles (used, reused, expired), direct fetch.
	for _, p := range []string{"/config/ignition", "/config/cloud-init/user-data", "/config/files/ks.cfg", "/config/secrets/db-password"} {
		if code, b := e.request("GET", p, nil, asMachine("web-1")); code != 200 {
			t.Fatalf("%s: %d %s", p, code, b)
		}
	}
	path := handleURL(t, e)
	e.request("GET", path, nil, nil)
	e.request("GET", path, nil, nil)
	keep(e.request("GET", path+"/status", nil, nil))
	expired := handleURL(t, e)
	e.clock.Advance(DefaultHandleTTL + time.Second)
	e.request("GET", expired, nil, nil)
	// Refusals and failures, which write errors to logs and events.
	keep(e.request("GET", "/config/ignition", nil, asMachine("web-2")))
	keep(e.request("GET", "/config/ignition?machine=web-2", nil, asMachine("web-1")))
	keep(e.request("GET", "/config/by-mac/52-54-00-00-00-01/ignition", nil, nil))
	keep(e.request("GET", "/config/by-mac/52-54-00-00-00-03/files/leaky.cfg", nil, nil))
	// Operator reads: preview, versions, audit, a reveal (whose answer is the value:
	// not kept), a rotation.
	keep(e.request("GET", "/api/v1/render/web-1?kind=ignition", nil, asRole("operator")))
	keep(e.request("GET", "/api/v1/render/web-1?kind=cloud-init&part=user-data", nil, asRole("operator")))
	keep(e.request("GET", "/api/v1/secrets/db-password/versions", nil, asRole("viewer")))
	_, revealed := e.request("GET", "/api/v1/secrets/db-password/value", nil, asRole("admin"))
	keep(e.request("POST", "/api/v1/secrets/rotate-key", nil, asRole("admin")))
	keep(e.request("GET", "/api/v1/secrets/db-password/audit", nil, asRole("viewer")))
	keep(e.request("GET", "/api/v1/secrets/api-token/audit", nil, asRole("viewer")))
	keep(e.request("GET", "/api/v1/secrets/via-api/audit", nil, asRole("viewer")))

	var text bytes.Buffer
	text.WriteString(e.logs.String())
	for _, m := range []string{"web-1", "web-2", "pub-1"} {
		for _, ev := range e.events(m) {
			text.WriteString(ev.Type + " " + ev.Message + "\n")
		}
	}
	entries := e.auditEntries()
	for _, a := range entries {
		text.WriteString(a.Actor + " " + a.Action + " " + a.Kind + " " + a.Name + " " + a.Summary + "\n")
	}
	text.Write(responses.Bytes())
	if countAudit(entries, "release", "") < 4 || countAudit(entries, "alert", "") != 1 || !strings.Contains(e.logs.String(), "secret released via handle") {
		t.Fatalf("the flow did not run as planned: %d releases, %d alerts", countAudit(entries, "release", ""), countAudit(entries, "alert", ""))
	}

	forms := func(v string) map[string][]byte {
		return map[string][]byte{
			"clear":  []byte(v),
			"base64": []byte(base64.StdEncoding.EncodeToString([]byte(v))),
			"hex":    []byte(hex.EncodeToString([]byte(v))),
		}
	}
	found := func(data []byte) []string {
		var hits []string
		for _, v := range values {
			for form, needle := range forms(v) {
				if bytes.Contains(data, needle) {
					hits = append(hits, form)
				}
			}
		}
		return hits
	}
	check := func(where string, data []byte) {
		if hits := found(data); len(hits) > 0 {
			t.Errorf("%s holds a secret value (%v)", where, hits)
		}
	}
	// The control: the reveal's answer (base64) and a rendered config (clear) are found.
	if len(found(revealed)) == 0 {
		t.Fatal("the grep does not find a revealed value: it proves nothing")
	}
	if _, b := e.request("GET", "/config/secrets/db-password", nil, asMachine("web-1")); len(found(b)) == 0 {
		t.Fatal("the grep does not find a delivered value: it proves nothing")
	}
	check("logs, events, audit and API listings", text.Bytes())

	scanDir := func(when string) {
		n := 0
		err := filepath.WalkDir(e.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n++
			check(when+" "+filepath.Base(p), b)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n < 2 {
			t.Fatalf("%s: scanned %d files, expected the database and the key", when, n)
		}
	}
	scanDir("while running:")
	if err := e.store.Close(); err != nil { // checkpoints the WAL into the database file
		t.Fatal(err)
	}
	scanDir("after close:")
	e.store = testkit.OpenSQLite(t, e.dir)
}
