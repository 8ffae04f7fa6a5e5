package secrets

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/testkit"
)

// replica is one kiln serve on a shared PostgreSQL database.
type replica struct {
	store store.Store
	svc   *Service
	http  *httptest.Server
}

func newReplica(t *testing.T, url, kekPath string) *replica {
	t.Helper()
	st := testkit.OpenPostgres(t, url)
	keys, err := LoadKeyRing(kekPath) // the replicas share one key file's content
	if err != nil {
		t.Fatal(err)
	}
	svc := &Service{Store: st, Keys: keys}
	if err := svc.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := &Server{Service: svc, Identity: headerIdentity}
	mux := http.NewServeMux()
	srv.RegisterPublic(mux)
	srv.RegisterAgent(mux, nil)
	r := &replica{store: st, svc: svc, http: httptest.NewTLSServer(mux)}
	t.Cleanup(func() { r.http.Close(); st.Close() })
	return r
}

// Two replicas on one PostgreSQL database: a handle issued by one is redeemed exactly
// once, whichever replica the two concurrent GETs reach.
func TestReplicasRedeemOnce(t *testing.T) {
	url := pgtest.NewDatabase(t)
	kek := filepath.Join(t.TempDir(), KEKFileName)
	a := newReplica(t, url, kek)
	b := newReplica(t, url, kek)
	ctx := context.Background()
	objs, err := resource.ParseManifests(strings.NewReader(fleet(ignitionTemplate, userDataTemplate)), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&inventory.Service{Store: a.store}).Apply(ctx, admin, objs); err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.Set(ctx, admin, "db-password", []byte(dbPassword)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Set(ctx, admin, "api-token", []byte(apiToken)); err != nil {
		t.Fatal(err)
	}
	if v, _, err := b.svc.Reveal(ctx, admin, "db-password", 0); err != nil || string(v) != dbPassword {
		t.Fatalf("reveal on the other replica: %v", err)
	}
	// One client that trusts both replicas' test certificates.
	roots := x509.NewCertPool()
	roots.AddCert(a.http.Certificate())
	roots.AddCert(b.http.Certificate())
	both := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	for i := range 10 {
		issuer := []*replica{a, b}[i%2]
		out, err := issuer.svc.Render(ctx, RenderRequest{Machine: "web-1", Target: tIgnition, Mode: ModeDeliver, BaseURL: issuer.http.URL, Actor: "machine:web-1"})
		if err != nil {
			t.Fatal(err)
		}
		u := handleURLRE.FindString(string(out.Content))
		path := u[strings.Index(u, "/secret-handles/"):]
		codes := concurrentGets(t, both, []string{a.http.URL + path, b.http.URL + path})
		if codes[200] != 1 || codes[410] != 1 {
			t.Fatalf("round %d: %v, want one 200 and one 410", i, codes)
		}
	}
	var alerts int
	err = a.store.View(ctx, func(tx store.Tx) error {
		entries, err := tx.ListAuditFor(ctx, "Secret", "api-token", 0, 0)
		alerts = countAudit(entries, "alert", "used again")
		return err
	})
	if err != nil || alerts != 10 {
		t.Fatalf("%d alerts, want 10: %v", alerts, err)
	}
	// The store-level race with more contenders, over both replicas.
	storetest.RunHandleRace(t, []store.Store{a.store, b.store})
}
