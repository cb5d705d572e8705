package db

import (
	"encoding/json"
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
