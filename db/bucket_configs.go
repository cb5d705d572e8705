package db

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// BucketConfig is a row of bucket_configs: the runtime switch of a bucket
// and the hash of the criteria its members were last computed with.
type BucketConfig struct {
	bun.BaseModel `bun:"table:bucket_configs,alias:bc"`

	ID           string    `bun:"id,pk,type:uuid,nullzero,default:gen_random_uuid()"`
	BucketID     string    `bun:"bucket_id,notnull"`
	Enabled      bool      `bun:"enabled,notnull"`
	CriteriaHash *string   `bun:"criteria_hash"`
	CreatedAt    time.Time `bun:"created_at,nullzero,notnull,default:now()"`
	UpdatedAt    time.Time `bun:"updated_at,nullzero,notnull,default:now()"`
}

// BucketConfigs returns every bucket_configs row, keyed by bucket id.
func BucketConfigs(ctx context.Context, idb bun.IDB) (map[string]BucketConfig, error) {
	var rows []BucketConfig
	if err := idb.NewSelect().Model(&rows).Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading bucket configs: %w", err)
	}
	configs := make(map[string]BucketConfig, len(rows))
	for _, r := range rows {
		configs[r.BucketID] = r
	}
	return configs, nil
}

// SetBucketEnabled sets the runtime switch of a bucket (contract §9),
// creating its bucket_configs row when it has none.
func SetBucketEnabled(ctx context.Context, idb bun.IDB, bucketID string, enabled bool, now time.Time) error {
	row := &BucketConfig{BucketID: bucketID, Enabled: enabled, CreatedAt: now, UpdatedAt: now}
	_, err := idb.NewInsert().Model(row).
		On("CONFLICT (bucket_id) DO UPDATE").
		Set("enabled = EXCLUDED.enabled").
		Set("updated_at = EXCLUDED.updated_at").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("setting the runtime switch of bucket %q: %w", bucketID, err)
	}
	return nil
}

// SetCriteriaHash records the hash of the criteria a bucket's members were
// computed with, creating its bucket_configs row (enabled) when it has none.
func SetCriteriaHash(ctx context.Context, idb bun.IDB, bucketID, hash string, now time.Time) error {
	row := &BucketConfig{BucketID: bucketID, Enabled: true, CriteriaHash: &hash, CreatedAt: now, UpdatedAt: now}
	_, err := idb.NewInsert().Model(row).
		On("CONFLICT (bucket_id) DO UPDATE").
		Set("criteria_hash = EXCLUDED.criteria_hash").
		Set("updated_at = EXCLUDED.updated_at").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("storing the criteria hash of bucket %q: %w", bucketID, err)
	}
	return nil
}
