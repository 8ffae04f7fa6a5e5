package enroll

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Issue 13's first attack, piece by piece: any host that asks for a machine's boot
// script must not get that machine's per-boot token, and a token taken from a script
// must not enroll from anywhere but the address Kiln leased to the machine.

const (
	victimMAC = "52:54:00:00:13:01"
	leased    = "127.0.0.1" // the loopback address the test agents connect from
	elsewhere = "127.0.0.2" // another host on the provisioning network
)

// bootLine asks for the boot credentials a script request from remote gets.
func bootLine(e *env, machine, mac, remote string) string {
	e.t.Helper()
	line, err := e.srv.BootCmdline(e.ctx, machine, mac, netip.MustParseAddr(remote))
	if err != nil {
		e.t.Fatalf("boot credentials for %s from %s: %v", machine, remote, err)
	}
	return line
}

// cmdlineToken is the kiln.token of a command line fragment, or "".
func cmdlineToken(line string) string {
	for _, kv := range strings.Fields(line) {
		if k, v, _ := strings.Cut(kv, "="); k == CmdlineToken {
			return v
		}
	}
	return ""
}

// lease records the lease Kiln's DHCP server gave mac (what dhcpstore writes).
func (e *env) lease(ip, mac string, expires time.Time) {
	e.t.Helper()
	spec, _ := json.Marshal(resource.LeaseSpec{IP: ip, MAC: mac, Subnet: "lan", State: resource.LeaseBound, ExpiresAt: &expires})
	err := e.st.Update(e.ctx, func(tx store.Tx) error {
		return tx.Create(e.ctx, &resource.Object{Kind: "Lease", Metadata: resource.Metadata{Name: ip}, Spec: spec})
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// newAgentFrom is an agent whose connections come from the local address from.
func (e *env) newAgentFrom(from string) *agentClient {
	a := e.newAgent()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	a.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.srv.CACertPool(), ServerName: "127.0.0.1"},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		}}
	return a
}

func (e *env) eventTypes(machine string) map[string]int {
	out := map[string]int{}
	for _, ev := range e.events(machine) {
		out[ev.Type]++
	}
	return out
}

func TestBootTokenNeverForNewMachineByDefault(t *testing.T) {
	e := newEnv(t)
	e.createMachine("fresh", "worker", victimMAC, resource.StateNew)
	e.lease(leased, victimMAC, e.clock.Now().Add(time.Hour))
	line := bootLine(e, "fresh", victimMAC, leased)
	if tok := cmdlineToken(line); tok != "" {
		t.Fatal("a machine in state new got a per-boot token")
	}
	// The agent still learns where to enroll (without a token: the approval path).
	mustContain(t, "cmdline", line, CmdlineServer+"=")
	mustContain(t, "cmdline", line, CmdlineCA+"=")
	if n := e.count("JoinToken"); n != 0 {
		t.Fatalf("%d join tokens minted for a new machine", n)
	}

	// An operator who wants it says so: a server option.
	e2 := newEnv(t, func(c *Config) { c.BootTokensForNew = true })
	e2.createMachine("fresh", "worker", victimMAC, resource.StateNew)
	e2.lease(leased, victimMAC, e2.clock.Now().Add(time.Hour))
	if tok := cmdlineToken(bootLine(e2, "fresh", victimMAC, leased)); tok == "" {
		t.Fatal("BootTokensForNew: no token for a new machine at its leased address")
	}
}

func TestBootTokenOncePerReprovision(t *testing.T) {
	e := newEnv(t)
	e.createMachine("victim", "worker", victimMAC, resource.StateProvisioned)
	e.lease(leased, victimMAC, e.clock.Now().Add(time.Hour))
	if tok := cmdlineToken(bootLine(e, "victim", victimMAC, leased)); tok != "" {
		t.Fatal("a provisioned machine got a per-boot token")
	}
	e.startWorkflow("victim")
	tok := cmdlineToken(bootLine(e, "victim", victimMAC, leased))
	if tok == "" {
		t.Fatal("no per-boot token for a reprovisioned machine at its leased address")
	}
	// The script requested again (iPXE retries, the attacker asks too): the same
	// token, never a new one that would supersede the machine's.
	e.clock.Advance(5 * time.Second)
	if again := cmdlineToken(bootLine(e, "victim", victimMAC, leased)); again != tok {
		t.Fatal("a second script request for the same pending boot got another token")
	}
	if got := cmdlineToken(bootLine(e, "victim", victimMAC, elsewhere)); got != "" {
		t.Fatalf("a script request from %s (not the leased %s) got a token", elsewhere, leased)
	}
	a := e.newAgent()
	if code, resp, msg := e.enroll(a, tok, facts(victimMAC)); code != http.StatusOK || resp.Machine != "victim" {
		t.Fatalf("the machine's own enrollment after the other requests: %d %s", code, msg)
	}
	// Used: a script request now carries no token (no new one in this reprovision).
	if got := cmdlineToken(bootLine(e, "victim", victimMAC, leased)); got != "" && got != tok {
		t.Fatal("a new per-boot token was minted within the same reprovision")
	}
	// A new reprovision mints a new one.
	e.clock.Advance(time.Second)
	e.startWorkflow("victim")
	tok2 := cmdlineToken(bootLine(e, "victim", victimMAC, leased))
	if tok2 == "" || tok2 == tok {
		t.Fatalf("a new reprovision did not mint a new token (same: %v)", tok2 == tok)
	}
}

func TestBootTokenOnlyToTheLeasedAddress(t *testing.T) {
	e := newEnv(t)
	e.createMachine("victim", "worker", victimMAC, resource.StateNew)
	e.startWorkflow("victim")
	// No lease at all (proxy mode, dnsmasq): no token.
	if got := cmdlineToken(bootLine(e, "victim", victimMAC, leased)); got != "" {
		t.Fatal("a token was served without any lease or reserved address for the MAC")
	}
	// A lease of that address to another MAC does not count.
	e.lease(leased, "52:54:00:00:13:99", e.clock.Now().Add(time.Hour))
	if got := cmdlineToken(bootLine(e, "victim", victimMAC, leased)); got != "" {
		t.Fatal("a token was served to an address leased to another MAC")
	}
	// An expired lease does not count.
	e.lease("127.0.0.3", victimMAC, e.clock.Now().Add(-time.Minute))
	if got := cmdlineToken(bootLine(e, "victim", victimMAC, "127.0.0.3")); got != "" {
		t.Fatal("a token was served to an address whose lease expired")
	}
	// The reserved address Kiln hands out counts.
	e2 := newEnv(t)
	spec, _ := json.Marshal(resource.MachineSpec{Profile: "worker", Interfaces: []resource.Interface{{MAC: victimMAC, IP: "127.0.0.4"}}})
	if err := e2.st.Update(e2.ctx, func(tx store.Tx) error {
		return tx.Create(e2.ctx, &resource.Object{Kind: "Machine", Metadata: resource.Metadata{Name: "victim"}, Spec: spec, Status: json.RawMessage(`{"state":"new"}`)})
	}); err != nil {
		t.Fatal(err)
	}
	e2.startWorkflow("victim")
	if got := cmdlineToken(bootLine(e2, "victim", victimMAC, "127.0.0.5")); got != "" {
		t.Fatal("a token was served to another address than the reserved one")
	}
	if got := cmdlineToken(bootLine(e2, "victim", victimMAC, "127.0.0.4")); got == "" {
		t.Fatal("no token for the machine's reserved address")
	}
}

func TestBootTokenWithheldIsAlertedAndAggregated(t *testing.T) {
	e := newEnv(t)
	e.createMachine("victim", "worker", victimMAC, resource.StateNew)
	e.lease(leased, victimMAC, e.clock.Now().Add(time.Hour))
	e.startWorkflow("victim")
	for range 5 {
		if got := cmdlineToken(bootLine(e, "victim", victimMAC, elsewhere)); got != "" {
			t.Fatal("a token was served to another address")
		}
	}
	alerts := e.auditEntries("boot-token-alert")
	if len(alerts) != 1 || alerts[0].Name != "victim" {
		t.Fatalf("alert audit entries after 5 requests in a minute: %+v, want 1 for victim", alerts)
	}
	mustContain(t, "alert", alerts[0].Summary, elsewhere)
	if n := e.eventTypes("victim")["EnrollAlert"]; n != 1 {
		t.Fatalf("%d EnrollAlert events, want 1", n)
	}
	e.clock.Advance(61 * time.Second)
	bootLine(e, "victim", victimMAC, elsewhere)
	alerts = e.auditEntries("boot-token-alert")
	if len(alerts) != 2 {
		t.Fatalf("%d alert audit entries after a minute, want 2", len(alerts))
	}
	mustContain(t, "aggregated alert", alerts[1].Summary, "5 script requests")
	// The real machine still gets its token, from its address.
	if got := cmdlineToken(bootLine(e, "victim", victimMAC, leased)); got == "" {
		t.Fatal("the machine got no token after another host's requests")
	}
}

func TestBootTokenFromTheWrongAddressIsRefused(t *testing.T) {
	e := newEnv(t)
	e.createMachine("victim", "worker", victimMAC, resource.StateNew)
	e.lease(leased, victimMAC, e.clock.Now().Add(time.Hour))
	e.startWorkflow("victim")
	tok := cmdlineToken(bootLine(e, "victim", victimMAC, leased))
	if tok == "" {
		t.Fatal("no token for the machine at its leased address")
	}
	// The attacker took the token off the wire and spoofs the MAC in its facts.
	code, _, msg := e.enroll(e.newAgentFrom(elsewhere), tok, facts(victimMAC))
	if code != http.StatusForbidden {
		t.Fatalf("enrollment from %s with the token leased to %s: %d %s, want 403", elsewhere, leased, code, msg)
	}
	mustContain(t, "refusal", msg, leased)
	mustContain(t, "refusal", msg, elsewhere)
	if n := e.tokenUses(tokenID(t, tok)); n != 0 {
		t.Fatalf("the refused enrollment consumed the token: %d uses", n)
	}
	if n := e.eventTypes("victim")["EnrollAlert"]; n != 1 {
		t.Fatalf("%d EnrollAlert events, want 1", n)
	}
	if len(e.auditEntries("enroll-alert")) != 1 {
		t.Fatal("no enroll-alert audit entry")
	}
	if cs := machineCertStatus(e.machine("victim")); cs.CertFingerprint != "" {
		t.Fatal("the attacker's enrollment left a certificate on the machine")
	}
	// The machine itself enrolls afterwards, and the token is then spent (replay).
	if code, resp, msg := e.enroll(e.newAgent(), tok, facts(victimMAC)); code != http.StatusOK || resp.Machine != "victim" {
		t.Fatalf("the machine's own enrollment: %d %s", code, msg)
	}
	if code, _, msg := e.enroll(e.newAgent(), tok, facts(victimMAC)); code != http.StatusUnauthorized {
		t.Fatalf("replayed token from the leased address: %d %s, want 401", code, msg)
	}
}

func TestBootTokenWindowCloses(t *testing.T) {
	e := newEnv(t)
	e.createMachine("victim", "worker", victimMAC, resource.StateNew)
	e.lease(leased, victimMAC, e.clock.Now().Add(24*time.Hour))
	e.startWorkflow("victim")
	tok := cmdlineToken(bootLine(e, "victim", victimMAC, leased))
	if tok == "" {
		t.Fatal("no token for the machine at its leased address")
	}
	e.clock.Advance(DefaultBootTokenTTL + time.Second)
	if got := cmdlineToken(bootLine(e, "victim", victimMAC, leased)); got != "" {
		t.Fatal("a script request after the boot window got a token")
	}
	if code, _, msg := e.enroll(e.newAgent(), tok, facts(victimMAC)); code != http.StatusUnauthorized || !strings.Contains(msg, "expired") {
		t.Fatalf("enrollment after the boot window: %d %s", code, msg)
	}
}
