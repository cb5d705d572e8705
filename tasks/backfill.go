package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
)

// BackfillMode says what a backfill does (contract §8).
type BackfillMode string

// The backfill modes.
const (
	// ModeFirstTime materializes a bucket that has no recorded criteria.
	ModeFirstTime BackfillMode = "first-time"
	// ModeReeval brings a bucket whose criteria changed up to date.
	ModeReeval BackfillMode = "reeval"
)

// BackfillInput is the input of bucket-backfill.
type BackfillInput struct {
	JobID    string       `json:"jobId"`
	BucketID string       `json:"bucketId"`
	Mode     BackfillMode `json:"mode"`
}

// BackfillOutput is the result of a backfill.
type BackfillOutput struct {
	JobID    string       `json:"jobId"`
	BucketID string       `json:"bucketId"`
	Mode     BackfillMode `json:"mode"`
	// Status is completed, failed, skipped or up_to_date.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	Joined int    `json:"joined"`
	Left   int    `json:"left"`
}

// NeededBackfill is the diff of contract §8 for one bucket: first-time
// when no criteria hash is recorded, reeval when the recorded one differs,
// "" when the members were computed with the current criteria.
func NeededBackfill(b *buckets.Bucket, configs map[string]db.BucketConfig) BackfillMode {
	cfg, ok := configs[b.ID]
	switch {
	case !ok || cfg.CriteriaHash == nil:
		return ModeFirstTime
	case *cfg.CriteriaHash != b.CriteriaHash:
		return ModeReeval
	}
	return ""
}

// JobFormat is the import_jobs format of a backfill mode.
func JobFormat(mode BackfillMode) string {
	if mode == ModeReeval {
		return db.FormatReeval
	}
	return db.FormatBackfill
}

// EnqueueBackfills runs the diff of contract §8 for every enabled bucket the
// runtime switch leaves on and, for each that needs it and has no open
// job, records a job and enqueues a bucket-backfill run without waiting. It
// first fails the dead jobs (abandonDeadJobs). Replicas running it at once
// enqueue one job per bucket.
func EnqueueBackfills(ctx context.Context, d *Deps) ([]BackfillInput, error) {
	if d.EnqueueBackfill == nil {
		return nil, nil
	}
	now := d.Now()
	var inputs []BackfillInput
	err := d.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		inputs = nil
		if err := db.LockBackfillEnqueue(ctx, tx); err != nil {
			return err
		}
		if err := abandonDeadJobs(ctx, tx, d, now); err != nil {
			return err
		}
		configs, err := db.BucketConfigs(ctx, tx)
		if err != nil {
			return err
		}
		for _, b := range d.Buckets.All() {
			mode := NeededBackfill(b, configs)
			if cfg, ok := configs[b.ID]; mode == "" || ok && !cfg.Enabled {
				continue
			}
			in, err := recordJob(ctx, tx, b.ID, mode, now)
			switch {
			case errors.Is(err, ErrBackfillOpen):
				continue
			case err != nil:
				return err
			}
			inputs = append(inputs, in)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("enqueueing backfills: %w", err)
	}
	// A job whose run could not be enqueued is failed at once, so that the
	// next diff enqueues it again.
	var errs []error
	enqueued := inputs[:0]
	for _, in := range inputs {
		if err := d.EnqueueBackfill(ctx, in); err != nil {
			errs = append(errs, fmt.Errorf("enqueueing the backfill of bucket %q: %w", in.BucketID, err))
			if ferr := db.FailJob(ctx, d.DB, in.JobID, 0, "enqueueing the run: "+err.Error(), d.Now()); ferr != nil {
				errs = append(errs, ferr)
			}
			continue
		}
		enqueued = append(enqueued, in)
		d.Logger.InfoContext(ctx, "backfill enqueued", slog.String("bucket_id", in.BucketID),
			slog.String("mode", string(in.Mode)), slog.String("job_id", in.JobID))
	}
	return enqueued, errors.Join(errs...)
}

// abandonDeadJobs fails the backfill jobs that made no progress for twice
// the backfill timeout (contract §8): their run died with its worker or
// its command, and would keep the bucket's join pass closed and every
// later backfill of it refused for good.
func abandonDeadJobs(ctx context.Context, tx bun.Tx, d *Deps, now time.Time) error {
	if d.BackfillTimeout <= 0 {
		return nil
	}
	n, err := db.AbandonStaleBackfills(ctx, tx, now.Add(-2*d.BackfillTimeout), now)
	if err != nil {
		return err
	}
	if n > 0 {
		d.Logger.WarnContext(ctx, "dead backfill jobs abandoned", slog.Int("jobs", n))
	}
	return nil
}

// ErrBackfillOpen is returned for a bucket that already has a pending or
// processing backfill job: there is one at a time.
var ErrBackfillOpen = errors.New("a backfill of the bucket is pending or processing")

// RecordBackfill records a backfill job of the bucket in the mode, under
// the same lock and rule as EnqueueBackfills, for a backfill run in-process.
func RecordBackfill(ctx context.Context, d *Deps, bucketID string, mode BackfillMode) (BackfillInput, error) {
	var in BackfillInput
	err := d.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := db.LockBackfillEnqueue(ctx, tx); err != nil {
			return err
		}
		now := d.Now()
		if err := abandonDeadJobs(ctx, tx, d, now); err != nil {
			return err
		}
		var err error
		in, err = recordJob(ctx, tx, bucketID, mode, now)
		return err
	})
	if err != nil {
		return in, fmt.Errorf("recording a backfill of bucket %q: %w", bucketID, err)
	}
	return in, nil
}

// recordJob inserts a pending job unless one is open (ErrBackfillOpen).
func recordJob(ctx context.Context, tx bun.Tx, bucketID string, mode BackfillMode, now time.Time) (BackfillInput, error) {
	open, err := db.HasOpenBackfill(ctx, tx, bucketID)
	if err != nil {
		return BackfillInput{}, err
	}
	if open {
		return BackfillInput{}, ErrBackfillOpen
	}
	job, err := db.CreateBackfillJob(ctx, tx, bucketID, JobFormat(mode), db.JobPending, now)
	if err != nil {
		return BackfillInput{}, err
	}
	return BackfillInput{JobID: job.ID, BucketID: bucketID, Mode: mode}, nil
}

// Backfill is bucket-backfill (contract §8): in reeval mode the members who
// no longer match leave through the funnel and emit (source backfill);
// then every live contact with a user key that matches and is not a
// member joins silently — historical matches must not fire journeys. It
// records the criteria hash and completes the job, or fails it with the
// error.
func Backfill(ctx context.Context, d *Deps, in BackfillInput) (BackfillOutput, error) {
	out := BackfillOutput{JobID: in.JobID, BucketID: in.BucketID, Mode: in.Mode}
	fail := func(err error) (BackfillOutput, error) {
		out.Status = db.JobFailed
		if in.JobID != "" {
			if ferr := db.FailJob(context.WithoutCancel(ctx), d.DB, in.JobID, out.Joined+out.Left, err.Error(), d.Now()); ferr != nil {
				d.Logger.ErrorContext(ctx, "recording a failed backfill", slog.Any("error", ferr))
			}
		}
		return out, fmt.Errorf("backfilling bucket %q: %w", in.BucketID, err)
	}
	b, ok := d.Buckets.Get(in.BucketID)
	if !ok {
		return fail(fmt.Errorf("%w: no enabled bucket %q", ErrInvalidInput, in.BucketID))
	}
	if in.Mode != ModeFirstTime && in.Mode != ModeReeval {
		return fail(fmt.Errorf("%w: mode %q: use %s or %s", ErrInvalidInput, in.Mode, ModeFirstTime, ModeReeval))
	}
	on, err := d.Switch.Enabled(ctx, b.ID)
	if err != nil {
		return fail(err)
	}
	if !on {
		out.Status, out.Reason = StatusSkipped, ReasonBucketDisabled
		if in.JobID != "" {
			if err := db.FailJob(ctx, d.DB, in.JobID, 0, ReasonBucketDisabled, d.Now()); err != nil {
				return out, fmt.Errorf("backfilling bucket %q: %w", in.BucketID, err)
			}
		}
		return out, nil
	}
	now := d.Now()
	if in.JobID != "" {
		if err := db.SetJobStatus(ctx, d.DB, in.JobID, db.JobProcessing, 0, now); err != nil {
			return fail(err)
		}
	}
	if err := backfillBucket(ctx, d, b, in, now, &out); err != nil {
		return fail(err)
	}
	if err := db.SetCriteriaHash(ctx, d.DB, b.ID, b.CriteriaHash, d.Now()); err != nil {
		return fail(err)
	}
	if in.JobID != "" {
		if err := db.SetJobStatus(ctx, d.DB, in.JobID, db.JobCompleted, out.Joined+out.Left, d.Now()); err != nil {
			return fail(err)
		}
	}
	out.Status = db.JobCompleted
	d.Logger.InfoContext(ctx, "bucket backfilled", slog.String("bucket_id", b.ID), slog.String("mode", string(in.Mode)),
		slog.Int("joined", out.Joined), slog.Int("left", out.Left))
	return out, nil
}

func backfillBucket(ctx context.Context, d *Deps, b *buckets.Bucket, in BackfillInput, now time.Time, out *BackfillOutput) error {
	// The job records its progress as it goes, so that a long backfill is
	// never taken for a dead one.
	var mu sync.Mutex
	lastProgress := time.Now()
	progressed := func() error {
		if in.JobID == "" || time.Since(lastProgress) < time.Second {
			return nil
		}
		lastProgress = time.Now()
		return db.SetJobStatus(ctx, d.DB, in.JobID, db.JobProcessing, out.Joined+out.Left, d.Now())
	}
	if in.Mode == ModeReeval {
		members, err := db.CriteriaLeavers(ctx, d.DB, b, now)
		if err != nil {
			return err
		}
		for chunk := range slices.Chunk(members, db.LeaveChunk) {
			res, err := d.transact(ctx, now, func(ctx context.Context, t *txn) error {
				_, err := t.leave(ctx, b, chunk, leaveSpec{Source: SourceBackfill, Reason: ReasonCriteria, Unless: b.Criteria})
				return err
			})
			if err != nil {
				return err
			}
			out.Left += res.of(b.ID)
			if err := progressed(); err != nil {
				return err
			}
		}
	}
	candidates, err := db.JoinCandidates(ctx, d.DB, b, now, absenceLegEvents(b))
	if err != nil {
		return err
	}
	// The chunks are independent (each user is in one), so backfillWriters
	// transactions write them at once; the first error stops the rest.
	chunks := make(chan []db.Candidate)
	var errs []error
	var wg sync.WaitGroup
	for range backfillWriters {
		wg.Go(func() {
			for chunk := range chunks {
				joiners := make([]db.Joiner, len(chunk))
				for i, c := range chunk {
					joiners[i] = db.Joiner{UserID: c.UserID, Email: deref(c.Email)}
				}
				res, err := d.transact(ctx, now, func(ctx context.Context, t *txn) error {
					_, err := t.join(ctx, b, joiners, joinSpec{Source: SourceBackfill, Recheck: true, Silent: true, Dated: true})
					return err
				})
				mu.Lock()
				out.Joined += res.of(b.ID)
				if err == nil {
					err = progressed()
				}
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	for chunk := range slices.Chunk(candidates, ReconcileBatch) {
		mu.Lock()
		failed := len(errs) > 0
		mu.Unlock()
		if failed {
			break
		}
		chunks <- chunk
	}
	close(chunks)
	wg.Wait()
	return errors.Join(errs...)
}

// backfillWriters is how many transactions write a backfill's chunks at
// once: the inserts, not the matcher query, are most of a backfill's time.
const backfillWriters = 4

// absenceLegEvents are the events of the criteria's absence legs
// (not_exists within a window): the everFired floor of a backfill. A
// contact who never fired them did not lapse; it never started.
func absenceLegEvents(b *buckets.Bucket) []string {
	var names []string
	buckets.Walk(b.Criteria, func(_ string, c buckets.Condition) {
		if e, ok := c.(*buckets.EventCondition); ok && e.Check == buckets.CheckNotExists && !e.Within.IsZero() &&
			!slices.Contains(names, e.EventName) {
			names = append(names, e.EventName)
		}
	})
	return names
}
