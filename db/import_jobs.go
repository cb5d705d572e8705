package db

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// ImportJob is a row of import_jobs. A bucket backfill is recorded as one,
// with FileName the bucket id and Format "bucket-backfill" or "bucket-reeval".
type ImportJob struct {
	bun.BaseModel `bun:"table:import_jobs,alias:ij"`

	ID            string          `bun:"id,pk,type:uuid,nullzero,default:gen_random_uuid()"`
	FileName      *string         `bun:"file_name"`
	Format        string          `bun:"format,notnull"`
	Status        string          `bun:"status,nullzero,notnull"`
	TotalRows     *int            `bun:"total_rows"`
	ProcessedRows int             `bun:"processed_rows,notnull"`
	FailedRows    int             `bun:"failed_rows,notnull"`
	Errors        json.RawMessage `bun:"errors,type:jsonb"`
	CreatedAt     time.Time       `bun:"created_at,nullzero,notnull,default:now()"`
	UpdatedAt     time.Time       `bun:"updated_at,nullzero,notnull,default:now()"`
}

// Backfill job formats: a bucket's first-time backfill, and its
// re-evaluation after a criteria change.
const (
	FormatBackfill = "bucket-backfill"
	FormatReeval   = "bucket-reeval"
)

// HasOpenBackfill reports whether a backfill or re-evaluation job of the
// bucket is pending or processing.
func HasOpenBackfill(ctx context.Context, idb bun.IDB, bucketID string) (bool, error) {
	exists, err := idb.NewSelect().TableExpr("import_jobs AS ij").
		Where("ij.file_name = ?", bucketID).
		Where("ij.format IN (?, ?)", FormatBackfill, FormatReeval).
		Where("ij.status IN ('pending', 'processing')").
		Exists(ctx)
	if err != nil {
		return false, fmt.Errorf("looking for open backfills of bucket %q: %w", bucketID, err)
	}
	return exists, nil
}
