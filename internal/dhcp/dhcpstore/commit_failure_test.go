package dhcpstore

import (
	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"

	"github.com/kilnhq/kiln/internal/testkit"

	"context"
	"errors"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/store"
)

// errCommitLost stands for a commit the database refused after the transaction's
// writes succeeded (a lost connection, a full disk at fsync).
var errCommitLost = errors.New("commit lost")

// commitFailingStore runs every Update's function to its end and then fails the
// transaction, as a commit that fails would: the function saw its writes
// succeed, nothing is kept.
type commitFailingStore struct {
	store.Store
}

func (s commitFailingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errCommitLost
	})
}

// TestLoneCommitFailureIsNotAcked: a REQUEST whose lease write succeeds in the
// transaction but whose commit fails gets no DHCPACK (the client would use an
// address no record holds), nothing is stored, and the drop is counted as a
// backend error. The lone operation's path (one operation, one transaction) is
// the one a quiet server takes for every client.
func TestLoneCommitFailureIsNotAcked(t *testing.T) {
	inner := testkit.OpenSQLite(t, t.TempDir())
	sl := NewLeases(commitFailingStore{inner}, 0)
	defer sl.Close()

	// Straight on the store: the commit's error reaches the caller.
	sn := hammerSubnet(t)
	if l, err := sl.Commit(context.Background(), commitReq(sn, "10.0.0.40", 1)); !errors.Is(err, errCommitLost) {
		t.Errorf("Commit: lease %+v, err %v; want the commit's error", l, err)
	}

	// Through the server: no ACK goes out for the lease that was not stored.
	h := newHarness(t, nil)
	h.srv.Machines = &Machines{Store: inner}
	h.srv.Leases = sl
	off := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeDiscover))
	if off == nil {
		t.Fatal("no offer (offers are held in memory and need no commit)")
	}
	ip := off.Msg.YourIPAddr.String()
	before := h.srv.Metrics.Dropped(dhcp.DropBackendError)
	if r := h.send(dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithRequested(ip), dhcptest.WithServerID(dhcptest.ServerIP))); r != nil {
		t.Errorf("REQUEST for %s answered %v with its commit failed, want no reply", ip, r.Msg.MessageType())
	}
	if got := h.srv.Metrics.Dropped(dhcp.DropBackendError); got != before+1 {
		t.Errorf("backend_error drops %d, want %d", got, before+1)
	}
	if got := h.srv.Metrics.Sent(dhcpv4.MessageTypeAck); got != 0 {
		t.Errorf("%d ACKs sent, want 0", got)
	}
	if leases := storedLeases(t, inner); len(leases) != 0 {
		t.Errorf("stored leases %+v after failed commits, want none", leases)
	}
}
