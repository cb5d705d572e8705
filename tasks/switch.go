package tasks

import (
	"context"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
)

// RuntimeSwitch reads the runtime switch of contract §9 —
// bucket_configs.enabled — through a cache that lives for a TTL, so that
// a disable reaches every path within the TTL without a query per event.
type RuntimeSwitch struct {
	idb bun.IDB
	ttl time.Duration

	mu       sync.Mutex
	read     time.Time
	disabled map[string]bool
}

// NewRuntimeSwitch returns a switch reading idb, caching for ttl (zero
// reads on every call).
func NewRuntimeSwitch(idb bun.IDB, ttl time.Duration) *RuntimeSwitch {
	return &RuntimeSwitch{idb: idb, ttl: ttl}
}

// Enabled reports whether the bucket is switched on at runtime. A bucket
// without a bucket_configs row is on.
func (s *RuntimeSwitch) Enabled(ctx context.Context, bucketID string) (bool, error) {
	return s.EnabledVia(ctx, s.idb, bucketID)
}

// EnabledVia is Enabled that reads the configs, when its cache is stale,
// through idb: a transaction that must not wait for a second connection
// of the pool passes itself.
//
// The lock is never held across the read: a caller holding a connection
// (a transaction) must not wait for one that waits for a connection.
func (s *RuntimeSwitch) EnabledVia(ctx context.Context, idb bun.IDB, bucketID string) (bool, error) {
	s.mu.Lock()
	disabled, fresh := s.disabled, s.disabled != nil && s.ttl > 0 && time.Since(s.read) < s.ttl
	s.mu.Unlock()
	if fresh {
		return !disabled[bucketID], nil
	}
	configs, err := db.BucketConfigs(ctx, idb)
	if err != nil {
		return false, err
	}
	disabled = map[string]bool{}
	for id, c := range configs {
		if !c.Enabled {
			disabled[id] = true
		}
	}
	s.mu.Lock()
	s.disabled, s.read = disabled, time.Now()
	s.mu.Unlock()
	return !disabled[bucketID], nil
}

// Set switches the bucket on or off and drops the cache.
func (s *RuntimeSwitch) Set(ctx context.Context, bucketID string, enabled bool, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.disabled = nil
	return db.SetBucketEnabled(ctx, s.idb, bucketID, enabled, now)
}

// switchedOn keeps the buckets the runtime switch leaves on. Call it before
// opening a transaction: the switch may read from the pool, and a
// transaction waiting for a second connection can starve the pool.
func switchedOn(ctx context.Context, d *Deps, bs []*buckets.Bucket) ([]*buckets.Bucket, error) {
	on := make([]*buckets.Bucket, 0, len(bs))
	for _, b := range bs {
		enabled, err := d.Switch.Enabled(ctx, b.ID)
		if err != nil {
			return nil, err
		}
		if enabled {
			on = append(on, b)
		}
	}
	return on, nil
}

// switchedOnIDs reads the runtime switch of each bucket id. Like
// switchedOn, call it before opening a transaction.
func switchedOnIDs(ctx context.Context, d *Deps, ids []string) (map[string]bool, error) {
	on := make(map[string]bool, len(ids))
	for _, id := range ids {
		enabled, err := d.Switch.Enabled(ctx, id)
		if err != nil {
			return nil, err
		}
		on[id] = enabled
	}
	return on, nil
}
