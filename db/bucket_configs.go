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
