// Package tasks is the engine: evaluating a user, the transition funnel,
// the reconcile sweep, ingest, expiry, backfill and the outbox dispatcher,
// as plain context-first functions over Deps, plus the small file that
// declares them as Hatchet tasks.
package tasks

import (
	"context"
	"log/slog"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/journeys"
)

// Deps is everything a task needs, built once in main and shared; nothing
// changes it once built.
type Deps struct {
	DB *bun.DB
	// Schema is what the database's shape asks of the rows the engine
	// writes, found once at boot (db.ReadSchema).
	Schema   db.Schema
	Buckets  *buckets.Registry
	Journeys *journeys.Registry
	Logger   *slog.Logger
	// Now is the one clock: every business timestamp comes from it, and
	// reaches SQL as a parameter.
	Now func() time.Time
	// Switch is the runtime switch of contract §9.
	Switch *RuntimeSwitch
	// Hatchet receives the run cancellations of exited journeys; nil when
	// no Hatchet server is configured.
	Hatchet Hatchet
	// Dispatcher sends the outbox to Hatchet after each commit of
	// transitions: in the background in a running worker, inline in a
	// command; nil when there is no Hatchet, and pushes then stay pending.
	Dispatcher *Dispatcher
	// Gatherer ingests the single events of concurrent runs in shared
	// rounds; nil ingests each alone, as a command does.
	Gatherer *Gatherer
	// Destinations are where transitions go besides Hatchet, and
	// Deliverers send their deliveries, one per destination (contract §15).
	Destinations Destinations
	Deliverers   []*Deliverer
	// Metrics counts for an operator's monitoring (contract §16); nil
	// counts nothing.
	Metrics *Metrics
	// EnqueueBackfill starts a bucket-backfill run without waiting; nil
	// outside a running worker, where nothing is enqueued (contract §8).
	EnqueueBackfill func(ctx context.Context, in BackfillInput) error
	// BackfillTimeout is bucket-backfill's execution timeout; a job with no
	// progress for twice as long is taken as dead.
	BackfillTimeout time.Duration
	// SweepBudget bounds the loops of one reconcile sweep (the composite
	// evaluation and the join pass); zero means no bound.
	SweepBudget time.Duration
}

// Hatchet is what the engine asks of the Hatchet server outside a task run.
type Hatchet interface {
	// Push sends events (at most DispatchBatch) in one bulk call.
	Push(ctx context.Context, events []db.OutboxEvent) error
	// CancelRuns cancels workflow runs by id.
	CancelRuns(ctx context.Context, runIDs []string) error
}
