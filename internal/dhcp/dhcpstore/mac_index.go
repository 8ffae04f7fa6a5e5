package dhcpstore

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kilnhq/kiln/internal/store"
)

// DefaultMACIndexTTL is how long Machines trusts its set of known MACs
// before it asks the store whether the machines' keys changed (one read of the
// keys version; the set is reloaded only when that changed). Changes made through
// this process are seen at once.
const DefaultMACIndexTTL = time.Second

// macIndex is the set of MACs that machines claim, kept in memory so that a
// DISCOVER from a MAC no machine claims (a new machine, a boot storm of them)
// costs no store read. It answers only while it is current: checked against the
// store's keys version within the TTL, and no key changed through this process
// since (store.KeysNotifier). Otherwise the caller asks the store, and the
// index refreshes itself in the background.
type macIndex struct {
	st         store.Store
	ttl        time.Duration
	cur        atomic.Pointer[macSet]
	refreshing atomic.Bool
	loads      atomic.Int64 // full reloads (tests)
}

type macSet struct {
	version int64     // the store's KeysVersion the set was read at
	local   int64     // the store's LocalKeysChanges before that read
	checked time.Time // when the version was last read
	macs    map[string]struct{}
}

func (x *macIndex) localChanges() int64 {
	if n, ok := x.st.(store.KeysNotifier); ok {
		return n.LocalKeysChanges()
	}
	return 0
}

// known says whether a machine claims mac. ok is false when the index cannot
// tell: it is being loaded or is not current.
func (x *macIndex) known(mac net.HardwareAddr, now time.Time) (known, ok bool) {
	s := x.cur.Load()
	if s == nil || now.Sub(s.checked) >= x.ttl || x.localChanges() != s.local {
		x.refresh(s)
		return false, false
	}
	_, known = s.macs[string(mac)]
	return known, true
}

// refresh reads the keys version, and the keys when it changed, in the
// background; one refresh runs at a time. On a store error the index stays
// stale (lookups go to the store) until the next try.
func (x *macIndex) refresh(old *macSet) {
	if !x.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer x.refreshing.Store(false)
		local := x.localChanges()
		checked := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var next *macSet
		err := x.st.View(ctx, func(tx store.Tx) error {
			v, err := tx.KeysVersion(ctx)
			if err != nil {
				return err
			}
			if old != nil && old.version == v {
				next = &macSet{version: v, local: local, checked: checked, macs: old.macs}
				return nil
			}
			keys, err := tx.ListKeys(ctx, "Machine", "mac:")
			if err != nil {
				return err
			}
			macs := make(map[string]struct{}, len(keys))
			for _, k := range keys {
				if hw, err := net.ParseMAC(strings.TrimPrefix(k, "mac:")); err == nil {
					macs[string(hw)] = struct{}{}
				}
			}
			next = &macSet{version: v, local: local, checked: checked, macs: macs}
			x.loads.Add(1)
			return nil
		})
		if err == nil {
			x.cur.Store(next)
		}
	}()
}
