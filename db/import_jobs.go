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

// Import job statuses.
const (
	JobPending    = "pending"
	JobProcessing = "processing"
	JobCompleted  = "completed"
	JobFailed     = "failed"
)

// LockBackfillEnqueue takes, until the end of tx, the lock that makes the
// backfill diff and its job inserts one step across replicas: two workers
// booting at once enqueue one job per bucket.
func LockBackfillEnqueue(ctx context.Context, tx bun.Tx) error {
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtext('bucket-worker:backfill-enqueue'))"); err != nil {
		return fmt.Errorf("locking the backfill queue: %w", err)
	}
	return nil
}

// CreateBackfillJob records a backfill job of the bucket in import_jobs.
func CreateBackfillJob(ctx context.Context, idb bun.IDB, bucketID, format, status string, now time.Time) (*ImportJob, error) {
	job := &ImportJob{FileName: &bucketID, Format: format, Status: status, CreatedAt: now, UpdatedAt: now}
	if _, err := idb.NewInsert().Model(job).Returning("*").Exec(ctx); err != nil {
		return nil, fmt.Errorf("recording a backfill job of bucket %q: %w", bucketID, err)
	}
	return job, nil
}

// SetJobStatus moves a job to processing or completed, with the rows it
// processed so far.
func SetJobStatus(ctx context.Context, idb bun.IDB, id, status string, processed int, now time.Time) error {
	_, err := idb.NewUpdate().TableExpr("import_jobs AS ij").
		Set("status = ?", status).
		Set("processed_rows = ?", processed).
		Set("updated_at = ?", now).
		Where("ij.id = ?", id).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("marking job %s %s: %w", id, status, err)
	}
	return nil
}

// FailJob marks a job failed with errors [{row, error}].
func FailJob(ctx context.Context, idb bun.IDB, id string, row int, cause string, now time.Time) error {
	_, err := idb.NewUpdate().TableExpr("import_jobs AS ij").
		Set("status = 'failed'").
		Set("failed_rows = failed_rows + 1").
		Set("errors = jsonb_build_array(jsonb_build_object('row', ?::int, 'error', ?::text))", row, cause).
		Set("updated_at = ?", now).
		Where("ij.id = ?", id).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("marking job %s failed: %w", id, err)
	}
	return nil
}

// AbandonStaleBackfills marks failed the pending or processing backfill
// jobs not updated since before: a run that died with its worker would
// otherwise keep its bucket's join pass closed for good.
func AbandonStaleBackfills(ctx context.Context, idb bun.IDB, before, now time.Time) (int, error) {
	res, err := idb.NewUpdate().TableExpr("import_jobs AS ij").
		Set("status = 'failed'").
		Set("errors = jsonb_build_array(jsonb_build_object('row', 0, 'error', ?::text))",
			"abandoned: no progress since "+before.UTC().Format(time.RFC3339)).
		Set("updated_at = ?", now).
		Where("ij.format IN (?, ?)", FormatBackfill, FormatReeval).
		Where("ij.status IN ('pending', 'processing')").
		Where("ij.updated_at < ?", before).
		Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("abandoning stale backfill jobs: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// ImportJobByID returns the job with the id, or nil.
func ImportJobByID(ctx context.Context, idb bun.IDB, id string) (*ImportJob, error) {
	var rows []ImportJob
	if err := idb.NewSelect().Model(&rows).Where("ij.id = ?", id).Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading job %s: %w", id, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	return &rows[0], nil
}
