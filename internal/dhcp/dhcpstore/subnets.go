package dhcpstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/dhcp"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// Subnets reads the Subnet objects of a store, caching them for TTL. A
// subnet whose spec does not parse is skipped and reported to OnError.
type Subnets struct {
	Store store.Store
	// TTL is how long a read is reused; 0: 5 seconds.
	TTL time.Duration
	// OnError, if not nil, is told about subnets that were skipped.
	OnError func(name string, err error)

	mu      sync.Mutex
	cached  []*dhcp.Subnet
	expires time.Time
}

// Subnets returns the stored subnets, at most TTL old.
func (s *Subnets) Subnets(ctx context.Context) ([]*dhcp.Subnet, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.cached != nil && now.Before(s.expires) {
		return s.cached, nil
	}
	var objs []*resource.Object
	err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		objs, _, err = tx.List(ctx, "Subnet", store.ListOptions{})
		return err
	})
	if err != nil {
		if s.cached != nil {
			return s.cached, nil // keep serving what we had while the store is away
		}
		return nil, fmt.Errorf("dhcp: list subnets: %w", err)
	}
	out := make([]*dhcp.Subnet, 0, len(objs))
	for _, o := range objs {
		spec, err := resource.Typed[resource.SubnetSpec](o)
		if err != nil {
			if s.OnError != nil {
				s.OnError(o.Metadata.Name, err)
			}
			continue
		}
		sn, err := dhcp.NewSubnet(o.Metadata.Name, *spec)
		if err != nil {
			if s.OnError != nil {
				s.OnError(o.Metadata.Name, err)
			}
			continue
		}
		out = append(out, sn)
	}
	ttl := s.TTL
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	s.cached, s.expires = out, now.Add(ttl)
	return out, nil
}
