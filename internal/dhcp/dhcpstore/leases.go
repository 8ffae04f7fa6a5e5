package dhcpstore

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// LeaseKind is the store kind of leases; an object's name is its IP address.
const LeaseKind = "Lease"

// LabelDiscovery marks the Lease of an unknown machine under the discovery
// policy ("true"): the boot side looks the client's address up and serves it the
// subnet's discovery profile.
const LabelDiscovery = "kiln.dev/discovery"

// Leases implements dhcp.Leases on Kiln's store, one Lease object per address.
//
// An address is taken by creating its Lease object (the name is the IP, so the
// store's uniqueness refuses a second one: store.ErrExists means another server
// holds it) or by updating an expired one at the resourceVersion read
// (store.ErrConflict means another server won; the operation is retried). So two
// Kiln servers sharing one PostgreSQL database never lease an address twice. The
// database is the authority; the in-memory hints (who holds what, a per-subnet
// cursor) only choose which few records an allocation reads, and are rebuilt from
// the store every Resync.
//
// Offers are not written: an offered address is held in memory for the client
// until the REQUEST, whose Commit is the only write of an exchange (see hold in
// holds.go for how two servers that offer one address are told apart).
//
// Writes are group-committed: Commit, Release and Decline queue their
// operation and wait; one writer goroutine takes everything queued (up to
// MaxBatch operations) and applies it in one store transaction, each operation
// checked against the records on its own. A lone operation is applied at once;
// while operations keep coming, the writer lets the next batch gather for up to
// BatchWindow (or until as many are queued as the last batch held), so that the
// goroutines serving requests get to queue theirs (on one core they only run
// while the writer waits).
// An operation that is refused (the address is taken, no lease ...) does not undo
// the others; one that fails on a store error aborts the transaction, and the
// batch is then applied again one operation per transaction, so that only that
// one fails. A caller is answered only once the transaction holding its operation
// has committed: what Commit returns is durable before the server sends the ACK.
type Leases struct {
	st     store.Store
	resync time.Duration

	// MaxBatch bounds the operations of one transaction; 0: DefaultMaxBatch. Set
	// it before first use.
	MaxBatch int
	// BatchWindow is how long the writer, after a transaction, lets the next
	// batch gather before it takes it (less when as many operations as the last
	// batch held are queued); 0: DefaultBatchWindow, negative: it does not wait
	// (the operations queued while the previous transaction ran make the batch).
	// Set it before first use.
	BatchWindow time.Duration

	mu       sync.Mutex // serializes use of the hints and holds; held during a transaction
	alloc    *dhcp.Allocator
	lastSync time.Time
	// holds are the offered addresses, held in memory only until the client's
	// REQUEST (or the hold's end).
	holds     map[netip.Addr]*hold
	lastPrune time.Time

	qmu     sync.Mutex
	queue   []*leaseOp
	writing bool          // a writer goroutine runs
	waiting bool          // the writer waits for the batch to gather
	target  int           // the batch size that ends the wait early
	closed  bool          // Close was called
	kick    chan struct{} // ends the writer's wait
	idle    sync.WaitGroup

	// batches and batched count transactions and the operations they held, for
	// tests and profiling.
	batches, batched atomic.Int64
}

// DefaultLeaseResync is how often Leases rebuilds its hints from the store.
const DefaultLeaseResync = 5 * time.Minute

// DefaultMaxBatch bounds the lease operations of one group commit.
const DefaultMaxBatch = 256

// DefaultBatchWindow is how long a batch may gather while operations keep coming.
const DefaultBatchWindow = time.Millisecond

// ErrLeasesClosed is returned by the write operations of a closed Leases.
var ErrLeasesClosed = errors.New("dhcp: lease store is closed")

// NewLeases returns a Leases on st. resync is how often the hints are
// rebuilt from all Lease objects (0: DefaultLeaseResync); in between they learn
// from the records each operation reads, including those another server wrote.
func NewLeases(st store.Store, resync time.Duration) *Leases {
	return &Leases{st: st, resync: cmp.Or(resync, DefaultLeaseResync), alloc: dhcp.NewAllocator(), kick: make(chan struct{}, 1),
		holds: map[netip.Addr]*hold{}}
}

// maxAttempts bounds the retries of an operation that lost a race to another server.
const maxAttempts = 4

// batchTimeout bounds one group-commit transaction (the callers' contexts do not:
// the transaction holds the operations of many).
const batchTimeout = 30 * time.Second

// leaseOp is one write operation waiting for a group commit.
type leaseOp struct {
	ctx  context.Context // the caller's: an operation whose caller gave up is skipped
	fn   func(ctx context.Context, t dhcp.LeaseTable) error
	err  error
	done chan struct{} // closed when err is set
}

// run queues fn for the next group commit and waits until the transaction that
// applied it has committed (or failed).
func (s *Leases) run(ctx context.Context, fn func(ctx context.Context, t dhcp.LeaseTable) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &leaseOp{ctx: ctx, fn: fn, done: make(chan struct{})}
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return ErrLeasesClosed
	}
	s.queue = append(s.queue, op)
	if !s.writing {
		s.writing = true
		s.idle.Add(1)
		go s.writer()
	} else if s.waiting && (len(s.queue) >= s.target || len(s.queue) >= s.maxBatch()) {
		s.waiting = false
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	s.qmu.Unlock()
	select {
	case <-op.done:
		return op.err
	case <-ctx.Done():
		// The operation may still be applied: a lease stored without a reply is
		// harmless (the client asks again and gets it back); the reverse never happens.
		return ctx.Err()
	}
}

func (s *Leases) maxBatch() int { return cmp.Or(s.MaxBatch, DefaultMaxBatch) }

// writer applies queued operations, a batch per transaction, until the queue is
// empty.
func (s *Leases) writer() {
	defer s.idle.Done()
	first := true
	for {
		s.qmu.Lock()
		if w := cmp.Or(s.BatchWindow, DefaultBatchWindow); !first && w > 0 && !s.closed && len(s.queue) < s.target && len(s.queue) < s.maxBatch() {
			s.waiting = true
			s.qmu.Unlock()
			t := time.NewTimer(w)
			select {
			case <-t.C:
			case <-s.kick:
				t.Stop()
			}
			s.qmu.Lock()
			s.waiting = false
			// The goroutines made runnable meanwhile (requests read from the socket)
			// are about to queue theirs: let them, as long as the queue grows. On one
			// core they would otherwise run only after this batch.
			for range 8 {
				n := len(s.queue)
				s.qmu.Unlock()
				runtime.Gosched()
				s.qmu.Lock()
				if len(s.queue) == n || len(s.queue) >= s.maxBatch() {
					break
				}
			}
		}
		first = false
		n := min(len(s.queue), s.maxBatch())
		if n == 0 {
			s.writing = false
			s.qmu.Unlock()
			return
		}
		s.target = n
		batch := make([]*leaseOp, n)
		copy(batch, s.queue)
		rest := copy(s.queue, s.queue[n:])
		clear(s.queue[rest:])
		s.queue = s.queue[:rest]
		select { // a kick for the batch just taken is stale
		case <-s.kick:
		default:
		}
		s.qmu.Unlock()
		s.apply(batch)
	}
}

// refused reports whether an operation's error is an answer about the leases (it
// wrote nothing, and the transaction stays usable) rather than a store failure.
func refused(err error) bool {
	return errors.Is(err, dhcp.ErrAddressTaken) || errors.Is(err, dhcp.ErrNoLease) || errors.Is(err, dhcp.ErrNoAddress) ||
		errors.Is(err, dhcp.ErrTableConflict) || errors.Is(err, dhcp.ErrTableExists) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// applyOne runs one operation in the transaction, again while it loses races.
func applyOne(ctx context.Context, t dhcp.LeaseTable, op *leaseOp) error {
	var err error
	for range maxAttempts {
		if err = op.fn(ctx, t); !errors.Is(err, dhcp.ErrTableConflict) {
			return err
		}
	}
	return fmt.Errorf("dhcp: lease store: gave up after %d conflicting attempts: %w", maxAttempts, err)
}

// apply runs a batch in one transaction and answers its callers; after a store
// failure it runs the operations one per transaction.
//
// The allocator's lock is held while an operation decides (and, outside a
// batch, writes), not while the batch's rows are stored and committed: offers
// (in memory) go on meanwhile, so that replies leave as the requests come
// instead of in bursts after each commit. What an operation wrote is in the
// hints before it is committed; a batch that fails is applied again operation
// by operation, each deciding on the store's records.
func (s *Leases) apply(batch []*leaseOp) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	s.mu.Lock()
	s.syncLocked(ctx)
	s.mu.Unlock()
	live := batch[:0:0]
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			op.err = err
			close(op.done)
			continue
		}
		live = append(live, op)
	}
	if len(live) == 0 {
		return
	}
	s.batches.Add(1)
	s.batched.Add(int64(len(live)))
	err := s.st.Update(ctx, func(tx store.Tx) error {
		var t dhcp.LeaseTable = txTable{tx}
		var bt *batchTable
		if len(live) > 1 {
			bt = &batchTable{txTable: txTable{tx}}
			t = bt
		}
		for _, op := range live {
			s.mu.Lock()
			op.err = applyOne(ctx, t, op)
			s.mu.Unlock()
			if op.err != nil && !refused(op.err) {
				return op.err
			}
		}
		if bt != nil {
			return bt.flush(ctx)
		}
		return nil
	})
	if err == nil || len(live) == 1 {
		for _, op := range live {
			if err != nil {
				op.err = err
			}
			close(op.done)
		}
		return
	}
	// One operation failed the transaction (or the commit failed): nothing of the
	// batch was kept. Apply each alone, so that a failure stays with its operation.
	for _, op := range live {
		var res error
		err := s.st.Update(ctx, func(tx store.Tx) error {
			s.mu.Lock()
			res = applyOne(ctx, txTable{tx}, op)
			s.mu.Unlock()
			if res != nil && refused(res) {
				return nil // nothing was written
			}
			return res
		})
		op.err = res
		if err != nil {
			op.err = err
		}
		close(op.done)
	}
}

// syncLocked rebuilds the hints when they are older than the resync period. A
// failure leaves the old hints: they are only hints.
func (s *Leases) syncLocked(ctx context.Context) {
	now := time.Now()
	if !s.lastSync.IsZero() && now.Sub(s.lastSync) < s.resync {
		return
	}
	s.lastSync = now
	var leases []*dhcp.Lease
	err := s.st.View(ctx, func(tx store.Tx) error {
		leases = leases[:0]
		cont := ""
		for {
			objs, next, err := tx.List(ctx, LeaseKind, store.ListOptions{Limit: 1000, Continue: cont})
			if err != nil {
				return err
			}
			for _, o := range objs {
				if l, err := leaseFromObject(o); err == nil {
					leases = append(leases, l)
				}
			}
			if next == "" {
				return nil
			}
			cont = next
		}
	})
	if err != nil {
		return
	}
	s.alloc.Reset()
	for _, l := range leases {
		s.alloc.Learn(l)
	}
}

// Resync makes the next operation rebuild the hints from the store.
func (s *Leases) Resync() {
	s.mu.Lock()
	s.lastSync = time.Time{}
	s.mu.Unlock()
}

// Close applies the operations already queued, waits for them, and makes later
// writes fail with ErrLeasesClosed. Lookup keeps working. It does not close the
// store.
func (s *Leases) Close() error {
	s.qmu.Lock()
	s.closed = true
	if s.waiting {
		s.waiting = false
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	s.qmu.Unlock()
	s.idle.Wait()
	return nil
}

// Offer implements dhcp.Leases. It writes nothing to the store: the address is held
// for the client in memory until req.Until (see hold).
func (s *Leases) Offer(ctx context.Context, req dhcp.OfferRequest) (*dhcp.Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.qmu.Lock()
	closed := s.closed
	s.qmu.Unlock()
	if closed {
		return nil, ErrLeasesClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncLocked(ctx)
	s.pruneHolds(req.Now)
	return s.alloc.Offer(ctx, offerTable{s: s, now: req.Now, until: req.Until}, req)
}

// Commit implements dhcp.Leases: the only write of an exchange. It binds the address
// at the record the offer was decided on; when another server wrote that record
// since (it offered the address too, and its client's REQUEST came first), the
// commit is decided again on the record and refused with ErrAddressTaken (NAK).
func (s *Leases) Commit(ctx context.Context, req dhcp.CommitRequest) (*dhcp.Lease, error) {
	var l *dhcp.Lease
	err := s.run(ctx, func(ctx context.Context, t dhcp.LeaseTable) (err error) {
		l, err = s.alloc.Commit(ctx, heldTable{t, s, req.Now}, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Release implements dhcp.Leases.
// An address the client was only offered is let go without a store write.
func (s *Leases) Release(ctx context.Context, req dhcp.ReleaseRequest) error {
	if s.dropHold(req.Client, req.IP, req.Now) {
		return nil
	}
	return s.run(ctx, func(ctx context.Context, t dhcp.LeaseTable) error {
		return s.alloc.Release(ctx, heldTable{t, s, req.Now}, req)
	})
}

// Decline implements dhcp.Leases. The quarantine is stored, also of an address the
// client was only offered.
func (s *Leases) Decline(ctx context.Context, req dhcp.DeclineRequest) error {
	return s.run(ctx, func(ctx context.Context, t dhcp.LeaseTable) error {
		return s.alloc.Decline(ctx, heldTable{t, s, req.Now}, req)
	})
}

// Lookup implements dhcp.Leases. It reads, so it runs in a read-only transaction.
func (s *Leases) Lookup(ctx context.Context, subnet string, c dhcp.Client) (l *dhcp.Lease, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncLocked(ctx)
	err = s.st.View(ctx, func(tx store.Tx) error {
		l, err = s.alloc.Lookup(ctx, heldTable{txTable{tx}, s, time.Time{}}, subnet, c)
		return err
	})
	return l, err
}

// batchTable is the leaseTable of a group commit of several operations: the
// leases they create are stored together (store.Tx.CreateBatch: one multi-row
// INSERT instead of one statement each), before any other use of the table and
// at the end of the batch. A create whose address turns out taken (another
// server bound it meanwhile) fails the batch with errBatchTaken; apply then runs
// the operations again one per transaction, each deciding on the records.
type batchTable struct {
	txTable
	pending []*resource.Object
}

var errBatchTaken = errors.New("dhcp: a lease created in a batch found its address taken")

func (b *batchTable) Get(ctx context.Context, ip netip.Addr) (*dhcp.Lease, any, error) {
	if err := b.flush(ctx); err != nil {
		return nil, nil, err
	}
	return b.txTable.Get(ctx, ip)
}

func (b *batchTable) Update(ctx context.Context, l *dhcp.Lease, token any) (any, error) {
	if err := b.flush(ctx); err != nil {
		return nil, err
	}
	return b.txTable.Update(ctx, l, token)
}

func (b *batchTable) Create(_ context.Context, l *dhcp.Lease) (any, error) {
	obj, err := leaseObject(l, nil)
	if err != nil {
		return nil, err
	}
	obj.Metadata.ResourceVersion = "1" // what the store gives a new object
	b.pending = append(b.pending, obj)
	return obj, nil
}

// flush stores the pending creates.
func (b *batchTable) flush(ctx context.Context) error {
	if len(b.pending) == 0 {
		return nil
	}
	taken, err := b.tx.CreateBatch(ctx, b.pending)
	b.pending = b.pending[:0]
	if err != nil {
		return err
	}
	if slices.Contains(taken, true) {
		return errBatchTaken
	}
	return nil
}

// txTable is a leaseTable on a store transaction.
type txTable struct{ tx store.Tx }

func (t txTable) Get(ctx context.Context, ip netip.Addr) (*dhcp.Lease, any, error) {
	obj, err := t.tx.Get(ctx, LeaseKind, ip.String())
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	l, err := leaseFromObject(obj)
	if err != nil || l.IP != ip {
		// A record Kiln cannot read is left alone: the address counts as held until
		// an operator fixes or deletes the object.
		return &dhcp.Lease{IP: ip, State: "unreadable", ExpiresAt: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, obj, nil
	}
	return l, obj, nil
}

func (t txTable) Create(ctx context.Context, l *dhcp.Lease) (any, error) {
	obj, err := leaseObject(l, nil)
	if err != nil {
		return nil, err
	}
	if err := t.tx.Create(ctx, obj); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, dhcp.ErrTableExists
		}
		return nil, err
	}
	return obj, nil // the store set its resourceVersion
}

func (t txTable) Update(ctx context.Context, l *dhcp.Lease, token any) (any, error) {
	old, _ := token.(*resource.Object)
	if old == nil {
		return nil, dhcp.ErrTableConflict
	}
	obj, err := leaseObject(l, old)
	if err != nil {
		return nil, err
	}
	if err := t.tx.Update(ctx, obj); err != nil {
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			return nil, dhcp.ErrTableConflict
		}
		return nil, err
	}
	return obj, nil
}

// leaseObject encodes a lease as a Lease object; old (if not nil) is the stored
// object it replaces, whose other labels, status and resourceVersion are kept.
func leaseObject(l *dhcp.Lease, old *resource.Object) (*resource.Object, error) {
	exp := l.ExpiresAt.UTC()
	spec := resource.LeaseSpec{
		IP: l.IP.String(), Subnet: l.Subnet, Hostname: l.Hostname, State: l.State, ExpiresAt: &exp,
	}
	if len(l.MAC) > 0 {
		spec.MAC = l.MAC.String()
	}
	if len(l.ClientID) > 0 {
		spec.ClientID = hex.EncodeToString(l.ClientID)
	}
	raw, err := json.Marshal(&spec)
	if err != nil {
		return nil, fmt.Errorf("encode lease %s: %w", l.IP, err)
	}
	obj := &resource.Object{APIVersion: resource.APIVersion, Kind: LeaseKind, Metadata: resource.Metadata{Name: l.IP.String()}, Spec: raw}
	if old != nil {
		obj.Metadata.ResourceVersion = old.Metadata.ResourceVersion
		obj.Status = old.Status
		if len(old.Metadata.Labels) > 0 {
			obj.Metadata.Labels = maps.Clone(old.Metadata.Labels)
		}
	}
	if l.Discovery {
		if obj.Metadata.Labels == nil {
			obj.Metadata.Labels = map[string]string{}
		}
		obj.Metadata.Labels[LabelDiscovery] = "true"
	} else {
		delete(obj.Metadata.Labels, LabelDiscovery)
	}
	return obj, nil
}

// leaseFromObject decodes a Lease object.
func leaseFromObject(o *resource.Object) (*dhcp.Lease, error) {
	spec, err := resource.Typed[resource.LeaseSpec](o)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(spec.IP)
	if err != nil {
		return nil, fmt.Errorf("lease %s: spec.ip: %w", o.Metadata.Name, err)
	}
	l := &dhcp.Lease{IP: ip, Subnet: spec.Subnet, Hostname: spec.Hostname, State: spec.State,
		Discovery: o.Metadata.Labels[LabelDiscovery] == "true"}
	if spec.MAC != "" {
		if l.MAC, err = net.ParseMAC(spec.MAC); err != nil {
			return nil, fmt.Errorf("lease %s: spec.mac: %w", o.Metadata.Name, err)
		}
	}
	if spec.ClientID != "" {
		if l.ClientID, err = hex.DecodeString(spec.ClientID); err != nil {
			return nil, fmt.Errorf("lease %s: spec.clientID: %w", o.Metadata.Name, err)
		}
	}
	if spec.ExpiresAt != nil {
		l.ExpiresAt = *spec.ExpiresAt
	}
	return l, nil
}
