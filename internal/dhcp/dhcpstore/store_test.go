package dhcpstore

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/postgres/pgtest"
	"github.com/kilnhq/kiln/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func createObject(tb testing.TB, st store.Store, kind, name string, spec any) {
	tb.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		tb.Fatal(err)
	}
	err = st.Update(context.Background(), func(tx store.Tx) error {
		return tx.Create(context.Background(), &resource.Object{Kind: kind, Metadata: resource.Metadata{Name: name}, Spec: raw})
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// storeHarness is a harness whose seams are the store-backed ones.
func storeHarness(tb testing.TB, st store.Store, subnets ...*dhcp.Subnet) *harness {
	tb.Helper()
	h := newHarness(tb, nil, subnets...)
	h.srv.Machines = &Machines{Store: st}
	h.srv.Leases = NewLeases(st, 0)
	return h
}

func storedLeases(tb testing.TB, st store.Store) []*dhcp.Lease {
	tb.Helper()
	var out []*dhcp.Lease
	err := st.View(context.Background(), func(tx store.Tx) error {
		objs, _, err := tx.List(context.Background(), LeaseKind, store.ListOptions{})
		for _, o := range objs {
			l, err := leaseFromObject(o)
			if err != nil {
				return err
			}
			out = append(out, l)
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestStoreLeasesSQLite(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	createObject(t, st, "Machine", "web-1", resource.MachineSpec{Interfaces: []resource.Interface{
		{MAC: "52:54:00:00:00:98"}, {MAC: macM, IP: "10.0.0.20", Hostname: "web-1.lab.example"}}})
	h := storeHarness(t, st)

	// A known machine gets its reservation, persisted before the ACK.
	ack := h.dora(macM)
	if ack.YourIPAddr.String() != "10.0.0.20" || ack.HostName() != "web-1.lab.example" {
		t.Fatalf("machine got %s %q", ack.YourIPAddr, ack.HostName())
	}
	var obj *resource.Object
	_ = st.View(context.Background(), func(tx store.Tx) error {
		var err error
		obj, err = tx.Get(context.Background(), LeaseKind, "10.0.0.20")
		return err
	})
	if obj == nil {
		t.Fatal("lease 10.0.0.20 not stored")
	}
	spec, _ := resource.Typed[resource.LeaseSpec](obj)
	if spec.MAC != macM || spec.State != resource.LeaseBound || spec.Subnet != "lab" || spec.ExpiresAt == nil || spec.Validate() != nil {
		t.Errorf("stored lease %+v", spec)
	}

	// Unknown clients get pool addresses; release, decline and reuse go through the store.
	ipA := h.dora(macA).YourIPAddr.String()
	ipB := h.dora(macB).YourIPAddr.String()
	if ipA == ipB || ipA != "10.0.0.100" {
		t.Fatalf("a %s b %s", ipA, ipB)
	}
	h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRelease, dhcptest.WithCiaddr(ipA), dhcptest.WithServerID("10.0.0.1")))
	h.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeDecline, dhcptest.WithRequested(ipB), dhcptest.WithServerID("10.0.0.1")))
	states := map[string]string{}
	for _, l := range storedLeases(t, st) {
		states[l.IP.String()] = l.State
	}
	if states[ipA] != resource.LeaseReleased || states[ipB] != resource.LeaseDeclined {
		t.Errorf("states %v", states)
	}
	if got := h.dora(macA).YourIPAddr.String(); got != ipA {
		t.Errorf("a came back to %s, want %s", got, ipA)
	}
	if got := h.dora(macB).YourIPAddr.String(); got == ipB {
		t.Error("b got its declined address")
	}

	// A new Leases (a restarted server) learns the leases from the store.
	h2 := storeHarness(t, st)
	h2.clock = h.clock
	h2.srv.Now = h.clock.Now
	if got := h2.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover)).Msg.YourIPAddr.String(); got != ipA {
		t.Errorf("after restart a offered %s, want %s", got, ipA)
	}
	// Expired leases are taken over.
	h.clock.Advance(3 * time.Hour)
	pool := []string{}
	for i := range 10 {
		pool = append(pool, h2.dora(fmt.Sprintf("52:54:00:00:03:%02x", i)).YourIPAddr.String())
	}
	if len(pool) != 10 {
		t.Fatal(pool)
	}
	if off := h2.send(dhcptest.Msg(t, "52:54:00:00:04:01", dhcpv4.MessageTypeDiscover)); off != nil {
		t.Errorf("11th client in a 10-address pool offered %s", off.Msg.YourIPAddr)
	}
}

func TestStoreSubnets(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	createObject(t, st, "Subnet", "lab", dhcptest.LabSubnet())
	createObject(t, st, "Subnet", "broken", map[string]any{"cidr": "10.1.0.0/33"})
	var skipped []string
	ss := &Subnets{Store: st, OnError: func(name string, err error) { skipped = append(skipped, name) }}
	got, err := ss.Subnets(context.Background())
	if err != nil || len(got) != 1 || got[0].Name != "lab" || got[0].LeaseTime != 2*time.Hour {
		t.Fatalf("subnets %v %v", got, err)
	}
	if len(skipped) != 1 || skipped[0] != "broken" {
		t.Errorf("skipped %v", skipped)
	}
}

// TestStaleHintsTwoHandles: two Leases on one SQLite database, each blind to
// the other's allocations, never hand out one address twice.
func TestStaleHintsTwoHandles(t *testing.T) {
	dir := t.TempDir()
	a := storeHarness(t, testkit.OpenSQLite(t, dir))
	b := storeHarness(t, testkit.OpenSQLite(t, dir))
	b.clock, b.srv.Now = a.clock, a.clock.Now
	seen := map[string]string{}
	for i := range 10 {
		h := a
		if i%2 == 1 {
			h = b
		}
		hw := fmt.Sprintf("52:54:00:00:05:%02x", i)
		ip := doraRestarting(h, hw)
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s given to %s and %s", ip, other, hw)
		}
		seen[ip] = hw
	}
}

// doraRestarting runs DORA for a client that, NAKed (the address offered to it
// was bound by the other server meanwhile), starts over with a DISCOVER.
func doraRestarting(h *harness, hw string) string {
	h.t.Helper()
	for range 10 {
		off := h.send(dhcptest.Msg(h.t, hw, dhcpv4.MessageTypeDiscover))
		if off == nil {
			h.t.Fatalf("%s: no offer", hw)
		}
		ip := off.Msg.YourIPAddr.String()
		r := h.send(dhcptest.Msg(h.t, hw, dhcpv4.MessageTypeRequest, dhcptest.WithRequested(ip), dhcptest.WithServerID(dhcptest.ServerIP)))
		switch {
		case r != nil && r.Msg.MessageType() == dhcpv4.MessageTypeAck:
			return ip
		case r == nil || r.Msg.MessageType() != dhcpv4.MessageTypeNak:
			h.t.Fatalf("%s: no ACK for %s: %v", hw, ip, r)
		}
	}
	h.t.Fatalf("%s: NAKed 10 times", hw)
	return ""
}

// TestOffersHeldInMemory: a DISCOVER writes nothing to the store; the offered
// address is held for the client on this server (another client is offered
// another one); the REQUEST stores the lease. When another server bound the
// offered address meanwhile (two replicas may offer one address), the REQUEST
// gets a NAK, and the client's next DISCOVER is offered another address. An offer
// the client turns down (it selected another server) is let go without a write;
// a DECLINE is stored.
func TestOffersHeldInMemory(t *testing.T) {
	dir := t.TempDir()
	st := testkit.OpenSQLite(t, dir)
	a := storeHarness(t, st)
	b := storeHarness(t, testkit.OpenSQLite(t, dir))
	b.clock, b.srv.Now = a.clock, a.clock.Now

	offA := a.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover))
	offB := a.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeDiscover))
	if offA == nil || offB == nil {
		t.Fatal("no offer")
	}
	ipA, ipB := offA.Msg.YourIPAddr.String(), offB.Msg.YourIPAddr.String()
	if ipA == ipB {
		t.Fatalf("%s offered to two clients by one server", ipA)
	}
	if got := storedLeases(t, st); len(got) != 0 {
		t.Fatalf("DISCOVERs stored %d leases: %+v", len(got), got[0])
	}
	// A retransmitted DISCOVER gets the same address back.
	if again := a.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover)); again.Msg.YourIPAddr.String() != ipA {
		t.Errorf("retransmitted DISCOVER offered %s, want %s", again.Msg.YourIPAddr, ipA)
	}

	// Server b, blind to a's offer, offers and binds ipA to another client.
	if got := doraRestarting(b, "52:54:00:00:06:01"); got != ipA {
		t.Fatalf("b bound %s, want %s (the address a offered)", got, ipA)
	}
	// a's client asks for its offer: NAK (RFC 2131 4.3.2), nothing written for it.
	r := a.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithRequested(ipA), dhcptest.WithServerID(dhcptest.ServerIP)))
	if r == nil || r.Msg.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("REQUEST of an address bound by the other server meanwhile: %v", r)
	}
	if l := storedLease(t, st, ipA); l == nil || l.MAC.String() != "52:54:00:00:06:01" || l.State != resource.LeaseBound {
		t.Fatalf("stored lease of %s: %+v", ipA, l)
	}
	// It starts over and gets another address (neither ipA nor b's offer to macB).
	ack := a.dora(macA).YourIPAddr.String()
	if ack == ipA || ack == ipB {
		t.Errorf("after the NAK a leased %s to %s", ack, macA)
	}
	if l := storedLease(t, st, ack); l == nil || l.MAC.String() != macA || l.State != resource.LeaseBound {
		t.Errorf("stored lease of %s: %+v", ack, l)
	}

	// macB takes another server's offer: a's hold ends, nothing is written.
	if r := a.send(dhcptest.Msg(t, macB, dhcpv4.MessageTypeRequest, dhcptest.WithRequested("10.0.0.150"), dhcptest.WithServerID("10.0.0.2"))); r != nil {
		t.Fatal("answered a request for another server")
	}
	if l := storedLease2(st, ipB); l != nil {
		t.Errorf("turned-down offer of %s stored: %+v", ipB, l)
	}

	// A DECLINE is stored (quarantine).
	h := a
	hw := "52:54:00:00:06:02"
	ip := h.dora(hw).YourIPAddr.String()
	h.send(dhcptest.Msg(t, hw, dhcpv4.MessageTypeDecline, dhcptest.WithRequested(ip), dhcptest.WithServerID(dhcptest.ServerIP)))
	if l := storedLease(t, st, ip); l == nil || l.State != resource.LeaseDeclined {
		t.Errorf("declined %s stored as %+v", ip, l)
	}
}

// hammer runs clients DORA cycles against the servers concurrently (each client
// alternates between them) and checks that no address was ever leased to two MACs.
func hammer(t *testing.T, st store.Store, servers []*harness, clients, rounds int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var mu sync.Mutex
	acked := map[string]string{} // ip → mac, from the ACKs seen
	naks := 0
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hw := fmt.Sprintf("52:54:00:10:%02x:%02x", c/256, c%256)
			last := ""
			for r := range rounds {
				h := servers[(c+r)%len(servers)]
				// Offers are held in memory: two servers may offer one address, and the
				// client whose REQUEST comes second gets a NAK and starts over with a
				// DISCOVER (RFC 2131 4.3.2); the server then knows the address is taken.
				// From round 1 on the client asks for the address it had (option 50 in the
				// DISCOVER, as dhclient does): the other server, which may not know that
				// lease yet, learns it from the record when it commits.
				var mods []dhcpv4.Modifier
				if last != "" {
					mods = append(mods, dhcptest.WithRequested(last))
				}
				var ip string
				var ack *dhcp.Reply
				for try := 0; ; try++ {
					off := h.srv.HandlePacket(context.Background(), dhcptest.Msg(t, hw, dhcpv4.MessageTypeDiscover, mods...).ToBytes(), h.in)
					if off == nil {
						errs <- fmt.Errorf("%s: no offer in round %d", hw, r)
						return
					}
					ip = off.Msg.YourIPAddr.String()
					ack = h.srv.HandlePacket(context.Background(), dhcptest.Msg(t, hw, dhcpv4.MessageTypeRequest, dhcptest.WithRequested(ip), dhcptest.WithServerID("10.0.0.1")).ToBytes(), h.in)
					if ack == nil || ack.Msg.MessageType() != dhcpv4.MessageTypeNak || try >= 20 {
						break
					}
					mu.Lock()
					naks++
					mu.Unlock()
				}
				if ack == nil || ack.Msg.MessageType() != dhcpv4.MessageTypeAck {
					errs <- fmt.Errorf("%s: no ACK for %s in round %d: %v", hw, ip, r, ack)
					return
				}
				mu.Lock()
				if other, ok := acked[ip]; ok && other != hw {
					mu.Unlock()
					errs <- fmt.Errorf("%s ACKed to %s and to %s", ip, other, hw)
					return
				}
				acked[ip] = hw
				mu.Unlock()
				last = ip
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d NAKs (an address offered by both servers)", naks)
	// The store agrees: one bound lease per client, distinct addresses.
	byMAC := map[string]string{}
	for _, l := range storedLeases(t, st) {
		if l.State != resource.LeaseBound {
			continue
		}
		if ip, dup := byMAC[l.MAC.String()]; dup {
			t.Errorf("%s holds %s and %s", l.MAC, ip, l.IP)
		}
		byMAC[l.MAC.String()] = l.IP.String()
	}
	if len(byMAC) != clients {
		t.Errorf("%d bound leases, want %d", len(byMAC), clients)
	}
}

func hammerSubnet(t testing.TB) *dhcp.Subnet {
	return mustSubnet(t, "lab", resource.SubnetSpec{CIDR: "10.0.0.0/24", Pools: []resource.Pool{{Start: "10.0.0.10", End: "10.0.0.250"}}, UnknownMachines: "allocate"})
}

func TestConcurrentSQLite(t *testing.T) {
	dir := t.TempDir()
	st := testkit.OpenSQLite(t, dir)
	servers := []*harness{storeHarness(t, st, hammerSubnet(t)), storeHarness(t, testkit.OpenSQLite(t, dir), hammerSubnet(t))}
	hammer(t, st, servers, 40, 3)
}

// TestTwoServersOnePostgres: two servers, each with its own store handle on one
// PostgreSQL database (two replicas), hammered at once.
func TestTwoServersOnePostgres(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := testkit.OpenPostgres(t, url), testkit.OpenPostgres(t, url)
	servers := []*harness{storeHarness(t, a, hammerSubnet(t)), storeHarness(t, b, hammerSubnet(t))}
	hammer(t, a, servers, 60, 3)
}

func TestStoreMachines(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	createObject(t, st, "Machine", "web-1", resource.MachineSpec{Interfaces: []resource.Interface{{MAC: macM, IP: "10.0.0.20"}}})
	createObject(t, st, "Machine", "db-1", resource.MachineSpec{Interfaces: []resource.Interface{{MAC: macB}}})
	m := &Machines{Store: st}
	got, err := m.MachineByMAC(context.Background(), dhcptest.MAC(macM))
	if err != nil || got.Name != "web-1" || got.IP != netip.MustParseAddr("10.0.0.20") {
		t.Fatalf("%+v %v", got, err)
	}
	if got, err := m.MachineByMAC(context.Background(), dhcptest.MAC(macB)); err != nil || got.Name != "db-1" || got.IP.IsValid() {
		t.Errorf("%+v %v", got, err)
	}
	if _, err := m.MachineByMAC(context.Background(), dhcptest.MAC(macA)); err != dhcp.ErrUnknownMachine {
		t.Errorf("unknown MAC: %v", err)
	}
	if owner, err := m.ReservedBy(context.Background(), netip.MustParseAddr("10.0.0.20")); err != nil || owner != "web-1" {
		t.Errorf("reserved by %q %v", owner, err)
	}
}

// TestStoreMachinesUKI: a machine's UKI flag comes from its profile's spec.boot.uki;
// a machine without a profile, with a profile that has none, or whose profile is
// missing has none.
func TestStoreMachinesUKI(t *testing.T) {
	st := testkit.OpenSQLite(t, t.TempDir())
	createObject(t, st, "Profile", "secure", resource.ProfileSpec{Boot: resource.BootSpec{Agent: true, UKI: resource.DefaultUKIArtifact}})
	createObject(t, st, "Profile", "ipxe", resource.ProfileSpec{Boot: resource.BootSpec{Agent: true}})
	for name, c := range map[string]struct{ mac, profile string }{
		"sb-1":     {macM, "secure"},
		"plain-1":  {macB, "ipxe"},
		"orphan-1": {macA, "gone"},
		"bare-1":   {"52:54:00:00:00:09", ""},
	} {
		createObject(t, st, "Machine", name, resource.MachineSpec{Profile: c.profile, Interfaces: []resource.Interface{{MAC: c.mac}}})
	}
	m := &Machines{Store: st, CacheTTL: -1}
	for name, c := range map[string]struct {
		mac  string
		want bool
	}{"sb-1": {macM, true}, "plain-1": {macB, false}, "orphan-1": {macA, false}, "bare-1": {"52:54:00:00:00:09", false}} {
		got, err := m.MachineByMAC(context.Background(), dhcptest.MAC(c.mac))
		if err != nil || got.Name != name || got.UKI != c.want {
			t.Errorf("%s: %+v %v, want UKI %v", name, got, err, c.want)
		}
	}
}
