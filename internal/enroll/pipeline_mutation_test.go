package enroll

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/resource"
)

// TestRegisterByMACBindsOnlyAProvenConnection: an enrollment by MAC alone binds
// its connection to the machine when the CSR carries that connection's channel
// binding (the agent API then answers on it without a client certificate), and
// does not when the CSR carries none: that connection stays anonymous.
func TestRegisterByMACBindsOnlyAProvenConnection(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RegisterByMAC = true })
	for i, bound := range []bool{true, false} {
		mac := []string{"52:54:00:00:00:91", "52:54:00:00:00:92"}[i]
		e.createMachine([]string{"mac-bound", "mac-unbound"}[i], "worker", mac, resource.StateProvisioning)
		key, err := newP256()
		if err != nil {
			t.Fatal(err)
		}
		conn, cb := e.pollConn()
		csr := csrPEM(t, nil, key)
		if bound {
			if csr, err = agentwire.ChannelBoundCSR(key, cb); err != nil {
				t.Fatal(err)
			}
		}
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialTLSContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}}
		body, _ := json.Marshal(EnrollRequest{CSR: csr, Facts: facts(mac)})
		code, data := e.post(c, "/enroll", body)
		var resp EnrollResponse
		if code != http.StatusOK || json.Unmarshal(data, &resp) != nil {
			t.Fatalf("register %s by MAC: %d %s", mac, code, data)
		}
		if resp.BoundConnection != bound {
			t.Errorf("CSR with channel binding %v: connection bound %v", bound, resp.BoundConnection)
		}
		want := map[bool]int{true: http.StatusOK, false: http.StatusUnauthorized}[bound]
		if code, data := e.get(c, "/agent/v1/self"); code != want {
			t.Errorf("channel binding %v: agent API on the enrollment connection %d %s, want %d", bound, code, data, want)
		}
		c.CloseIdleConnections()
	}
}

// TestRefusedEnrollmentLeavesNoBatchWaiting: an enrollment refused before it
// reaches a batch (a forged token), or committed, no longer counts as one on its
// way: the batcher would otherwise linger for it before every commit.
func TestRefusedEnrollmentLeavesNoBatchWaiting(t *testing.T) {
	e := newEnv(t)
	if code, _, _ := e.enroll(e.newAgent(), "not-a-token", facts("52:54:00:00:00:93")); code == http.StatusOK {
		t.Fatal("a forged token enrolled")
	}
	if n := e.srv.batches.preparing.Load(); n != 0 {
		t.Errorf("%d enrollments counted on their way to a batch after a refusal, want 0", n)
	}
	if code, _, msg := e.enroll(e.newAgent(), e.token(TokenRequest{Profile: "worker"}), facts("52:54:00:00:00:96")); code != http.StatusOK {
		t.Fatal(code, msg)
	}
	if n := e.srv.batches.preparing.Load(); n != 0 {
		t.Errorf("%d enrollments counted on their way to a batch after a commit, want 0", n)
	}
}

// TestTokenCIDRScope: a token scoped to CIDRs enrolls from an address inside one
// of them and is refused (403, naming them) from anywhere else.
func TestTokenCIDRScope(t *testing.T) {
	e := newEnv(t)
	inside := e.token(TokenRequest{Profile: "worker", CIDRs: []string{"10.9.0.0/16", "127.0.0.0/8"}})
	if code, _, msg := e.enroll(e.newAgent(), inside, facts("52:54:00:00:00:94")); code != http.StatusOK {
		t.Errorf("from 127.0.0.1 with a token for 127.0.0.0/8: %d %s", code, msg)
	}
	outside := e.token(TokenRequest{Profile: "worker", CIDRs: []string{"10.9.0.0/16"}})
	if code, _, msg := e.enroll(e.newAgent(), outside, facts("52:54:00:00:00:95")); code != http.StatusForbidden || !strings.Contains(msg, "may only be used from 10.9.0.0/16") {
		t.Errorf("from 127.0.0.1 with a token for 10.9.0.0/16: %d %s, want 403", code, msg)
	}
}

// TestClaimsCacheBound: the verified-token cache holds up to 4096 tokens; the
// next starts a new cache.
func TestClaimsCacheBound(t *testing.T) {
	var c claimsCache
	for i := range 4096 {
		c.put(strconv.Itoa(i), &Claims{ID: strconv.Itoa(i)})
	}
	if len(c.m) != 4096 {
		t.Fatalf("cache holds %d after 4096 puts", len(c.m))
	}
	if cl, ok := c.get("7"); !ok || cl.ID != "7" {
		t.Fatalf("get: %v %v", cl, ok)
	}
	c.put("4096", &Claims{ID: "4096"})
	if len(c.m) != 1 {
		t.Errorf("the 4097th token: cache holds %d, want a new cache of 1", len(c.m))
	}
}
